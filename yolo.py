"""yolo.py: the YOLO inference class. Not implemented yet (see the open issues)."""


class YOLO:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("yolo.YOLO: not implemented yet")
