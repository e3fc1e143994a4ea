"""amt: anterior mediastinal tumour segmentation and detection in chest CT.

Importing this package is silent and light: submodules that need torch import it themselves.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
