"""sdporec: language-model recommenders trained with SFT, DPO and Softmax-DPO."""

__version__ = "0.1.0"
