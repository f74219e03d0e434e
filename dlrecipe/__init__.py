"""dlrecipe: automate the step-by-step recipe for training neural networks (check, overfit, LR, search, curves)."""
__version__ = "0.1.0"
