"""trainsafe: catch PyTorch training-loop mistakes at test time and in source.

Importing this package must stay cheap and must not import torch or libcst:
pytest loads the plugin in every run, also in repositories that never opt in.
"""

__version__ = "0.1.0"
