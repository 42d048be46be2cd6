"""trainsafe's static side: a libcst linter for PyTorch training-loop pitfalls.

Installed as ``trainsafe_lint`` (the folder is ``lint/``). Needs libcst, never torch.
"""
