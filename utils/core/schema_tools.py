"""The schema's settings of detection, evaluation and the tools: predict.py's modes, export and maps, ablate.py,
and the module commands (utils.data.anchors, utils.data.convert, utils.data.demo_data, utils.deploy.quantize).

Written once here; utils/core/settings.py generates every parser from them. Choices that higher layers own are
plain tuples, checked against their registries by tests/test_settings.py.
"""
from utils.core.setting import REQUIRED, Setting

METRICS = ("voc", "voc07", "coco", "all")        # utils.eval.evaluator.METRICS
COCO_BACKENDS = ("fast", "pycocotools")          # utils.eval.evaluator.COCO_BACKENDS
CAM_METHODS = ("gradcam", "layercam", "eigencam")  # utils.deploy.cam.CAM_METHODS
CALIB_METHODS = ("minmax", "entropy", "percentile")  # utils.deploy.quantize.CALIB_METHODS
WEIGHT_BITS = (7, 8)                             # utils.deploy.quantize.WEIGHT_BITS
WRITE_FORMATS = ("voc", "yolo", "coco")          # utils.data.writers / convert.WRITE_FORMATS
DEMO_STYLES = ("demo", "alt")                    # utils.data.demo_data.STYLES
P = ("predict",)
M = ("get_map",)
A = ("ablate",)
DETECTION = (
    Setting("conf", 0.25, "score threshold before NMS (predict.py and YOLO: ultralytics' 0.25, so that a briefly "
            "trained model still shows boxes; raise it for fewer false ones)", "detection", ("get_map", "predict"),
            type=float, tool_defaults={"get_map": 0.001}),
    Setting("nms", 0.3, "NMS IoU threshold", "detection", ("get_map", "predict"), type=float,
            tool_defaults={"get_map": 0.5}),
    Setting("max_det", 300, "most detections per image", "detection", P, type=int),
    Setting("letterbox", True, "keep aspect ratio with grey padding; --no-letterbox stretches", "detection",
            ("predict", "anchors"), kind="switch"),
    Setting("agnostic_nms", False, "class-agnostic NMS: a box suppresses overlapping lower-scoring boxes of every "
            "class, not only of its own (also inside --export-onnx-nms graphs)", "detection", ("get_map", "predict"),
            kind="flag"),
    Setting("slice", 0, "sliced inference for small objects (SAHI): detect in overlapping tiles of N x N image "
            "pixels, each letterboxed to the input size, and merge across tiles; 0 = off", "slicing",
            ("get_map", "predict"), type=int, metavar="N"),
    Setting("overlap", 0.2, "with --slice: how much neighbouring tiles overlap, a fraction of the tile in [0, 1)",
            "slicing", ("get_map", "predict"), type=float),
    Setting("slice_full", True, "with --slice: also detect in the whole image and merge it with the tiles (large "
            "objects); --no-slice-full: tiles only", "slicing", ("get_map", "predict"), kind="switch"),
)
EVALUATION = (
    Setting("iou", 0.5, "IoU a detection must exceed to match for VOC AP", "evaluation", M, type=float),
    Setting("metric", "all", "voc: all-point AP (VOC2010+); voc07: 11-point AP; coco: adds COCO mAP@[.5:.95] and the "
            "size breakdown; all: every one", "evaluation", M, choices=METRICS),
    Setting("coco_backend", "fast", "fast: vectorised, the same numbers as pycocotools (tested); pycocotools: run "
            "COCOeval itself", "evaluation", M, choices=COCO_BACKENDS),
    Setting("score_thr", 0.5, "score for precision/recall/F1 and the confusion matrix", "evaluation", M, type=float),
    Setting("detections", None, "score this COCO results file (image_id, category_id, bbox [x,y,w,h], score) instead "
            "of running a model; for a COCO JSON, image_id and category_id are its ids, as pycocotools reads them; "
            "for other datasets, category_id is the class index + 1 (category_name may name it)", "evaluation", M),
    Setting("no_plots", False, "skip the PNG plots", "evaluation", M, kind="flag"),
    Setting("skip_unreadable", False, "score without the images (and their ground truths) that cannot be read or "
            "hold invalid ground truth, and say how many were left out; without it such images stop the evaluation",
            "evaluation", M, kind="flag"),
    Setting("out", None, "output folder (quantize: the int8 graph), files overwritten", "run",
            ("get_map", "predict", "ablate", "quantize"),
            tool_defaults={"ablate": "logs/ablation", "quantize": "out/quantize/model_int8.onnx"},
            default_text="get_map.py: a new map* folder in the weights' run folder, or under map_out/; predict.py: "
            "a new out/predict/expN"),
)
PREDICT = (
    Setting("img", None, "image file to detect in", "source", P, exclusive="source"),
    Setting("dir", None, "folder of images; unreadable files are skipped with a warning", "source", P,
            exclusive="source"),
    Setting("video", None, "video file, camera index such as 0, or stream URL (rtsp://, rtmp://, http://, https://)",
            "source", P, exclusive="source"),
    Setting("source", None, "what to detect in, as ultralytics names it: a folder runs as --dir; a camera index, a "
            "stream URL or a video file (.mp4, .avi, .mov, .mkv, ...) as --video; anything else as --img", "source", P,
            exclusive="source"),
    Setting("export_onnx", None, "write an ONNX graph (opset 17, dynamic batch) and exit; a bare file name "
            "(m.onnx) goes beside the weights, a path with a folder where it says", "export", P,
            metavar="PATH", exclusive="source"),
    Setting("export_onnx_nms", False, "with --export-onnx: put decoding, --conf, --nms and --max-det inside the "
            "graph", "export", P, kind="flag"),
    Setting("int8", False, "with --export-onnx: quantize the raw graph to int8 (static, QDQ) with calibration "
            "images from --data; run it with --weights PATH.onnx", "export", P, kind="flag"),
    Setting("calib_images", 100, "calibration images for int8, spread evenly over the calibration split", "export",
            ("predict", "quantize"), type=int),
    Setting("fps", False, "benchmark the whole detect path on --img (or a random 640x480 image)", "speed", P,
            kind="flag"),
    Setting("fps_runs", 50, "timed runs for --fps", "speed", P, type=int),
    Setting("warmup", 5, "untimed runs before --fps timing", "speed", P, type=int),
    Setting("heatmap", False, "also write an objectness heatmap per image", "maps", P, kind="flag"),
    Setting("attention_map", False, "also write, per attention site, the block's spatial map over the image "
            "(<name>_att_<site>.jpg; CBAM, coordinate, triplet attention) or its channel weights (.png; SE, ECA, ...)",
            "maps", P, kind="flag"),
    Setting("cam", False, "also write <name>_cam.jpg: per detection (best --cam-top) a class activation map of its "
            "score over the image, with its box (torch network only)", "maps", P, kind="flag"),
    Setting("cam_method", "layercam", "layercam (gradients kept per position), gradcam (gradients averaged per "
            "channel: lights up whatever looks like the detection) or eigencam (first principal component, "
            "gradient-free, the same for every detection)", "maps", P, choices=CAM_METHODS),
    Setting("cam_layer", "head", "head (the input of each detection's own head), an attention site (feat1, feat2, "
            "upsample, csp1..csp3) or a module path of model.named_modules()", "maps", P),
    Setting("cam_top", 8, "CAMs for the best K detections of each image; 0 = all", "maps", P, type=int),
    Setting("save_txt", False, "write labels/<name>.txt: 'class score x1 y1 x2 y2' per line", "outputs", P,
            kind="flag"),
    Setting("save_json", False, "write detections.json in COCO results format, as get_map.py writes and reads it: "
            "category_id is the class index + 1, with category_name; image_id is the output name (an int when it "
            "is digits)", "outputs", P, kind="flag"),
    Setting("crop", False, "write crops/<class>/<name>_<i>.jpg per detection", "outputs", P, kind="flag"),
    Setting("count", False, "print the objects per class", "outputs", P, kind="flag"),
    Setting("max_frames", 0, "stop a video after this many frames; 0 = all", "outputs", P, type=int),
    Setting("track", False, "with --video: follow the objects across frames with ByteTrack (pip install trackers), "
            "draw each box's track id and write tracks.csv (frame, id, x1, y1, x2, y2, score, class)", "outputs", P,
            kind="flag"),
    Setting("track_thresh", 0.5, "with --track: score a detection needs to start a track; detections between --conf "
            "and it only continue tracks (ByteTrack's second stage)", "outputs", P, type=float),
    Setting("reconnect", 5, "with --video of a camera or a stream URL: tries at reopening a dropped stream, a second "
            "apart, after each drop, before prediction stops (0: never)", "outputs", P, type=int),
    Setting("show", False, "also show results in a window (needs a GUI OpenCV)", "outputs", P, kind="flag"),
    Setting("logs", "logs", "where to look for weights without --weights (the newest best.pth, else the newest "
            "last.pth or interrupted.pth)", "run", P,
            default_text="logs, in the working directory"),
    Setting("backend", None, "inference engine: torch, onnx (ONNX Runtime) or openvino (the same ONNX graph on "
            "OpenVINO's CPU plugin, fp32 or int8 graphs, bf16 by --amp; pip install openvino)", "run",
            ("get_map", "predict"),
            choices=("torch", "onnx", "openvino"), default_text="torch; onnx for .onnx weights (or openvino)"),
)
ABLATE = (
    Setting("variants", None, "variants, one per argument: a phi integer, a block name or a per-site spec, each may "
            "add ',fusion=gated' or ',fusion=msf' ('fusion=msf' alone: no attention); an argument without '=' may "
            "list several separated by commas", "ablation", A, nargs="+", exclusive="variants",
            default_text="0 1 2 3 4, i.e. phi 0..4, concat merge"),
    Setting("sweep_sites", None, "variants: phi 0, then BLOCK at each site in turn (feat1, feat2, upsample, csp1, "
            "csp2, csp3)", "ablation", A, metavar="BLOCK", exclusive="variants", default_text="off, use --variants"),
    Setting("pairs", False, "with --sweep-sites: BLOCK at every pair of sites", "ablation", A, kind="flag"),
    Setting("baseline", None, "the variant the others are compared with", "ablation", A,
            default_text="the first variant"),
    Setting("bootstrap", 1000, "paired bootstrap resamples of the validation images for the difference of one "
            "seed's pair; 0 turns the bootstrap off", "ablation", A, type=int),
    Setting("cam_images", (), "also write cam_<image stem>.jpg: the CAM of one detection (the baseline's top one) in "
            "each variant's seed-0 last.pth, side by side", "ablation", A, nargs="+", metavar="IMAGE"),
    Setting("seeds", 1, "train every variant with seeds 0..N-1", "ablation", A, type=int),
    Setting("train_args", "", "more train.py flags in one string, written with '=': --train-args=\"--lr 0.02 "
            "--no-ema\"", "ablation", A, default_text="none"),
    Setting("eval_split", None, "split scored after training", "ablation", A, default_text="the one get_map.py uses"),
    Setting("bench_size", 416, "input size for params, GFLOPs and latency", "ablation", A, type=int),
    Setting("latency_runs", 20, "timed forward passes per variant; the median is reported", "ablation", A, type=int),
    Setting("latency_warmup", 3, "untimed forward passes per variant first", "ablation", A, type=int),
    Setting("threads", 0, "CPU threads PyTorch computes with (torch.set_num_threads); on a machine shared with other "
            "work give fewer than its cores; ablate.py: the threads of the latency timing only", "run",
            ("train", "get_map", "predict", "ablate"), type=int, default_text="0, PyTorch's choice: one per core"),
)
MODULES = (
    Setting("clusters", None, "number of anchors", "anchors", ("anchors",), type=int,
            default_text="as many as --anchors"),
    Setting("iterations", 300, "most k-means iterations per run", "anchors", ("anchors",), type=int),
    Setting("restarts", 5, "k-means runs; the best is kept", "anchors", ("anchors",), type=int),
    Setting("write", None, "write the new anchors to this file (nothing is written without it)", "anchors",
            ("anchors",)),
    Setting("from_format", None, "the format of SRC", "convert", ("convert",), flag="--from",
            choices=("voc", "yolo", "coco", "labelme"), tool_defaults={"convert": REQUIRED}),
    Setting("to_format", None, "the format to write", "convert", ("convert",), flag="--to", choices=WRITE_FORMATS,
            tool_defaults={"convert": REQUIRED}),
    Setting("splits", None, "splits to convert", "convert", ("convert",), nargs="+",
            default_text="every split SRC lists"),
    Setting("style", "demo", "which demo", "demo", ("demo_data",), choices=DEMO_STYLES),
    Setting("demo_format", "voc", "voc (the original), or a conversion of it", "demo", ("demo_data",),
            flag="--format", choices=WRITE_FORMATS),
    Setting("root", None, "parent folder", "demo", ("demo_data",), default_text="<repo>/demo_data"),
    Setting("calib_split", None, "split the calibration images come from", "quantize", ("quantize",),
            default_text="the training split"),
    Setting("calib_method", "minmax", "activation ranges", "quantize", ("quantize",), choices=CALIB_METHODS),
    Setting("per_channel", True, "int8 weight scales per output channel", "quantize", ("quantize",), kind="switch"),
    Setting("weight_bits", 7, "bits of the int8 weights: 7 gives the same outputs on AVX2-only and VNNI CPUs, 8 can "
            "saturate on AVX2-only ones and is for x86 CPUs with VNNI", "quantize", ("quantize",), type=int,
            choices=WEIGHT_BITS),
    Setting("head_fp32", True, "leave the two output convs in fp32", "quantize", ("quantize",), kind="switch"),
    Setting("fp32_out", None, "fp32 graph", "quantize", ("quantize",),
            default_text="beside --out, 'int8' in its name replaced by 'fp32'"),
)
TOOLS_SETTINGS = DETECTION + EVALUATION + PREDICT + ABLATE + MODULES
