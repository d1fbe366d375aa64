"""What the tests share, so no test file imports another (tests/test_suite_shape.py checks it):

voc      the one VOC writer (write_voc) and the datasets built on it (the tiny VOC, get_map's split, the scene
         VOC), and the converters from VOC to the other layouts;
models   the one checkpoint factory (make_checkpoint; save_random_checkpoint is its get_map preset), random
         BN statistics, random images;
attention  the attention blocks' re-statement pieces and hand-worked parameter counts;
samples  evaluator samples and the devkit AP loop, augmentation samples, train.py argv, the script names.

Fixtures (the scan cache, the tiny VOC, get_map's VOC) are in tests/conftest.py.
"""
