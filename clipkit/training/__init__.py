"""Training and shipping of the bundled models (how shapes-clip, lseg-shapes and shapes-groupvit were made).

``clip`` + ``clip_card`` (``clipkit world train-clip``), ``lseg`` (``train-lseg``), ``groupvit`` with its losses,
phases, CLIP initialisation, calibration sweep and card (``train-groupvit``). This package sits above the
methods and models it trains: nothing in ``clipkit/methods``, ``clipkit/groupvit`` or ``clipkit/world`` imports it.
"""
