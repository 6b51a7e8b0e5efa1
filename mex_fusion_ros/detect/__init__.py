"""Does fusion help the detector? Detection benchmark and training on labelled image pairs (ROS-free).

- ``dataset``: a labelled paired dataset (``ir/``, ``vi/``, ``labels/``) and its validation;
- ``inputs``: what the detector looks at: ``ir``, ``vi`` or any fuser of ``fusion.registry``;
- ``evaluate`` / ``report``: ``mex-fusion detect eval`` (mAP50, mAP50-95, recall per class,
  input and degradation preset; image grids with boxes, bar plots);
- ``train``: ``mex-fusion detect train`` (fuse the pairs, write an ultralytics dataset, train a YOLO);
- ``scene_dataset``: the synthetic demo scene written as a labelled paired dataset.

The scores are ``eval.detection_metrics``, the labels ``bag.detection``; see ``docs/detection.md``.
"""
