"""One module per rule: ``tsNNN_<rule_name>.py`` defines that rule's RuntimeCheck."""
