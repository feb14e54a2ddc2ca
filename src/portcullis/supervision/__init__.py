"""`portcullis serve` process supervision: the planes, their restarts, their ports, their lives.

`portcullis serve` runs each plane as a granian process (`plane_process`) and keeps them
running (`supervisor`); every plane and every granian worker dies with its parent
(`lifeline`); a port someone else holds stops the start (`ports`).
"""
