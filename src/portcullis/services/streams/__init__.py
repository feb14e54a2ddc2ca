"""Streams of the control plane: live traffic frames (traffic.py) and the real-time hub."""
