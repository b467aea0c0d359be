"""Inference backends behind one engine protocol (see ``base``).

Only this package and ``edgeyolo.gpu`` import ``tensorrt`` or ``cuda``, and only lazily.
"""
