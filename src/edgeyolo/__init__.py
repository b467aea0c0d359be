"""edgeyolo: run several YOLO models at once on edge boxes and publish what they see."""

__version__ = "0.1.0"
