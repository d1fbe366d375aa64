"""The schema's training settings, by concern: model, data, schedule, augmentation, loss, run.

Each is written once here (name, type, default, help); train.py's parser, the recipes, a --config YAML,
TrainConfig and YOLOLoss all read them from the schema (utils/core/settings.py). Choices of names that higher
layers own (fusions, box losses, assigners, recipes, data formats) are plain tuples here; tests/test_settings.py
checks that they equal the registries they name.
"""
from utils.core.amp import AMP_CHOICES
from utils.core.paths import DEFAULT_ANCHORS_FILE
from utils.core.setting import REQUIRED, Setting, input_size

PHI_HELP = "0 none, 1 se, 2 cbam, 3 eca, 4 ca"  # nets.attention.PHI_NAMES (tests/test_settings.py)
FUSIONS = ("concat", "gated", "msf")            # nets.attention.FUSION_NAMES
DATA_FORMATS = ("voc", "yolo", "coco", "labelme")  # utils.data.layouts.DATA_FORMATS
RECIPE_NAMES = ("default", "reference")         # utils.engine.recipes.RECIPES
BOX_LOSSES = ("ciou", "giou")
ASSIGNERS = ("shape", "aligned")
OPTIMIZERS = ("sgd", "adam", "adamw")

T = ("train",)
TA = ("train", "ablate")
MODEL = (
    Setting("config", None, "YAML of arguments (e.g. a run's run_args.yaml); flags given here override it", "recipe",
            T),
    Setting("recipe", "default", "a set of defaults (utils/engine/recipes.py): this project's recipe for training "
            "from scratch, or bubbliiiing/yolov4-tiny-pytorch's; a config file and flags override it", "recipe", T,
            choices=RECIPE_NAMES),
    Setting("init", "prior", "initialisation: PyTorch's, with head biases at the priors, or the reference's "
            "normal(0, 0.02)", "model", T, choices=("prior", "normal")),
    Setting("phi", None, f"attention: {PHI_HELP}; a checkpoint knows its own; nets.summary without --phi or "
            "--attention lists every phi", "model", ("train", "get_map", "predict", "summary"), type=int,
            tool_defaults={"train": 0}),
    Setting("attention", None, "attention name or per-site spec (feat1=cbam,feat2=se,...), or a phi; overrides "
            "--phi; a checkpoint knows its own", "model", ("train", "get_map", "predict", "quantize", "summary")),
    Setting("num_classes", 20, "number of classes", "model", ("summary",), type=int),
    Setting("fusion", "concat", "how the upsampled P5 branch joins feat1 before the P4 head: darknet's "
            "concatenation, or a gated or multi-scale fusion block (nets/yolo.py FPNMerge); nets.summary: 'all' "
            "lists each", "model", ("train", "summary"), choices=FUSIONS, tool_choices={"summary": ("all",)},
            tool_defaults={"summary": None}, default_text="concat"),
    Setting("input_size", None, "network input size: a multiple of 32 (square) or H,W", "model",
            ("train", "get_map", "predict", "ablate", "anchors", "quantize", "summary"), type=input_size,
            default_text="train.py: 320 on the demo dataset, else 416; get_map.py, predict.py and "
            "utils.deploy.quantize: the checkpoint's (416 for one that records none); ablate.py: train.py's",
            tool_defaults={"anchors": 416, "summary": 416}, habits=(("--imgsz", "ultralytics"),)),
)
DATA = (
    Setting("data", "VOCdevkit", "dataset: a VOCdevkit root, a VOC year folder, an annotation-lines file, a YOLO "
            "data YAML or images/ + labels/ folder, a COCO JSON or root, or a labelme folder; the demo dataset when "
            "VOCdevkit/ is empty", "data", ("train", "get_map", "predict", "ablate", "anchors", "quantize")),
    Setting("data_format", None, "format of --data", "data", ("train", "get_map", "predict", "ablate", "anchors",
            "quantize"), choices=DATA_FORMATS, default_text="detected from what --data points at"),
    Setting("images", None, "the image folder of a COCO JSON or root; file_name entries that lead out of the "
            "folders beside the JSON (../, absolute paths) are read only from inside it", "data",
            ("train", "get_map", "predict", "ablate", "anchors", "quantize", "convert"), metavar="DIR",
            default_text="looked for beside the JSON"),
    Setting("classes", None, "classes file", "data", ("train", "get_map", "predict", "ablate", "anchors",
            "quantize", "convert"), default_text="a checkpoint's class names, else the names the dataset declares, "
            "else model_data/voc_classes.txt (coco_classes.txt for darknet .weights), or the demo's classes"),
    Setting("split", None, "split of --data to read", "data", ("get_map", "predict", "anchors", "quantize"),
            default_text="the evaluation split (e.g. VOC2007/test, the demo's val) to score on; the training split "
            "for calibration and anchors"),
    Setting("train_split", None, "training split", "data", T, default_text="trainval/train, see utils/data/voc.py"),
    Setting("val_split", None, "validation split", "data", T, default_text="the evaluation split get_map.py uses"),
    Setting("anchors", str(DEFAULT_ANCHORS_FILE), "anchors file (w,h pairs in pixels)", "model", ("train", "anchors"),
            default_text="model_data/yolo_anchors.txt"),
    Setting("auto_anchors", False, "at the start of a new run, refit the anchors the heads use by k-means on the "
            "training boxes at the input size, and keep the refit when its average best IoU is higher (both printed; "
            "the anchors used written to the run folder's anchors.txt)", "model", T, kind="switch"),
)
SCHEDULE = (
    Setting("epochs", None, "total epochs, freeze epochs included", "schedule", TA,
            type=int, default_text="100; 25 on the demo; ablate.py: train.py's"),
    Setting("freeze_epochs", 0, "epochs with the backbone frozen first (useful with --weights)", "schedule", T,
            type=int),
    Setting("freeze_batch_size", 16, "batch size while the backbone is frozen", "schedule", T, type=int),
    Setting("batch_size", 8, "batch size (per process under torchrun); images per forward pass when scoring",
            "schedule", ("train", "get_map", "ablate", "quantize"), type=int,
            tool_defaults={"ablate": None}, default_text="8"),
    Setting("lr", None, "learning rate for a batch of 64, scaled linearly to --batch-size", "schedule", T,
            type=float, default_text="0.01 for adamw/adam, 0.1 for sgd"),
    Setting("min_lr", None, "final learning rate for a batch of 64", "schedule", T, type=float,
            default_text="lr / 100"),
    Setting("optimizer", "adamw", "optimizer", "schedule", T, choices=OPTIMIZERS),
    Setting("momentum", 0.937, "SGD momentum / Adam beta1", "schedule", T, type=float),
    Setting("weight_decay", 5e-4, "weight decay (conv and linear weights only)", "schedule", T, type=float),
    Setting("lr_schedule", "cos", "learning-rate decay after warmup", "schedule", T, choices=("cos", "step")),
    Setting("warmup_epochs", 3.0, "linear warmup length in epochs", "schedule", T, type=float),
    Setting("progressive_size", 0, "progressive resizing: the first epoch trains at this input size (its longer "
            "side, a multiple of 32 below --input-size's), which grows linearly, rounded down to multiples of 32, "
            "to --input-size by --progressive-ratio of the epochs; validation and mAP stay at --input-size (0: off)",
            "schedule", T, type=int),
    Setting("progressive_ratio", 0.5, "share of the epochs over which --progressive-size grows to --input-size",
            "schedule", T, type=float),
)
AUGMENTATION = (
    Setting("mosaic", 0.5, "probability of a mosaic sample", "augmentation", T, type=float),
    Setting("mixup", 0.0, "probability of mixing up a mosaic sample with another", "augmentation", T, type=float),
    Setting("mosaic_ratio", 0.7, "mosaic and mixup only during this first share of epochs", "augmentation", T,
            type=float),
    Setting("jitter", 0.3, "aspect-ratio jitter of training images", "augmentation", T, type=float),
    Setting("scale", (0.5, 1.5), "range of a training image's size relative to the input", "augmentation", T,
            type=float, nargs=2, metavar=("MIN", "MAX")),
    Setting("flip", 0.5, "probability of a horizontal flip", "augmentation", T, type=float),
    Setting("hsv", (0.1, 0.7, 0.4), "hue, saturation, value gains", "augmentation", T, type=float, nargs=3,
            metavar=("H", "S", "V")),
)
LOSS = (
    Setting("label_smoothing", 0.0, "class label smoothing", "loss", T, type=float),
    Setting("smooth_by_classes", False, "label smoothing to eps / C (the reference's form) instead of eps / 2",
            "loss", T, kind="switch"),
    Setting("focal_loss", False, "sigmoid focal loss for classes", "loss", T, kind="flag"),
    Setting("box_weight", 0.4, "weight of the box loss (the reference: 0.05)", "loss", T, type=float),
    Setting("obj_weight", 1.0, "weight of the objectness loss", "loss", T, type=float),
    Setting("cls_weight", 0.5, "weight of the class loss", "loss", T, type=float),
    Setting("cls_weights", None, "a weight per class on the class loss's BCE: auto (inverse class frequency of the "
            "training split's objects, to --cls-weights-power, normalised to mean 1), a file of one weight per class "
            "(one number a line, in the classes file's order) or w1,w2,...", "loss", T, metavar="auto|FILE|W1,W2,...",
            default_text="none: every class 1"),
    Setting("cls_weights_power", 1.0, "power of --cls-weights auto's inverse class frequency (0.5: its square root, "
            "0: all ones)", "loss", T, type=float),
    Setting("se_loss", 0.0, "weight of EncNet's SE-loss (which classes each image holds, from every enc block's "
            "encoded vector); needs an enc block in --attention (0: off)", "loss", T, type=float, metavar="WEIGHT"),
    Setting("obj_size_scale", False, "multiply the objectness weight by (input / 416)^2, as the reference", "loss",
            T, kind="switch"),
    Setting("cls_count_scale", False, "multiply the class weight by classes / 80, as the reference", "loss", T,
            kind="switch"),
    Setting("bce_clip", 0.0, "BCE on probabilities clipped to [c, 1 - c] (the reference: 1e-7; 0: BCE from "
            "logits)", "loss", T, type=float),
    Setting("box_loss", "ciou", "box loss form: 1 - CIoU (the reference's) or 1 - GIoU", "loss", T,
            choices=BOX_LOSSES),
    Setting("ciou_alpha_grad", False, "keep CIoU's aspect weight alpha in the graph, as the reference", "loss", T,
            kind="switch"),
    Setting("assign_thres", 0.213, "assign a truth to every anchor with shape IoU above this (1.0: best anchor "
            "only, as the reference)", "loss", T, type=float),
    Setting("hard_obj", False, "objectness target 1 at positives (reference) instead of the IoU", "loss", T,
            kind="flag"),
    Setting("ignore_thres", 0.5, "predictions overlapping a truth above this IoU are not negatives", "loss", T,
            type=float),
    Setting("scale_x_y", 2.0, "grid sensitivity of box centres: centre = (sigmoid(t) * s - (s - 1) / 2 + cell) * "
            "stride (darknet's yolov4-tiny uses 1.05, the reference 1.0); predict.py: overrides the model's",
            "loss", ("train", "predict"), type=float, tool_defaults={"predict": None},
            default_text="2.0; predict.py: the checkpoint's, 1.05 for .weights"),
    Setting("neighbor_cells", True, "also assign a truth to the 2 neighbouring cells nearest its centre (needs "
            "--scale-x-y >= 2)", "loss", T, kind="switch"),
    Setting("assigner", "shape", "positives: shape (the anchor-shape and cell rule above) or aligned (task-aligned: "
            "of the shape rule's positives and the cells inside a truth at the anchors that rule gave it, the --topk "
            "whose prediction fits it best, as TOOD and YOLOv8)", "loss", T, choices=ASSIGNERS),
    Setting("topk", 10, "positives per truth of --assigner aligned", "loss", T, type=int),
    Setting("iou_cls", True, "class target at positives is the predicted box's IoU (as the objectness target is), "
            "so the score ranks tight boxes first; --no-iou-cls: 1, as the reference", "loss", T, kind="switch"),
)
RUN = (
    Setting("weights", None, "weights: a train.py checkpoint, a reference .pth or a darknet .weights file "
            "(predict.py, get_map.py: or a .onnx graph exported here); train.py starts from them, the others run them", "run",
            ("train", "get_map", "predict", "quantize"), tool_defaults={"quantize": REQUIRED},
            default_text="train.py: none; get_map.py and predict.py: the newest best.pth under logs/"),
    Setting("resume", None, "continue the run of this last.pth exactly where it stopped, in its folder and with its "
            "recorded settings; with it, only --epochs (more epochs: the recorded schedule is kept and the added "
            "epochs train at its final lr), --data, --images, --data-format and --classes (the dataset moved: its "
            "scan must match the recorded one), --workers, --threads, --device, --amp, --channels-last, "
            "--save-period, --quiet, --logger, --compile and --cache may be given; other flags are refused", "run", T),
    Setting("save_dir", "logs", "folder of the run folders", "run", T),
    Setting("name", "exp", "run folder name (exp, exp2, ... when taken)", "run", T),
    Setting("save_period", 0, "also keep epoch_N.pth every N epochs (0: off)", "run", T, type=int),
    Setting("eval_period", None, "mAP every N epochs and at the end (0: off)", "run", TA, type=int,
            default_text="5; ablate.py: train.py's"),
    Setting("patience", 0, "stop after N epochs without mAP gain (0: off)", "run", T, type=int),
    Setting("val_loss", True, "skip the validation loss after each epoch (with --eval-period 0 no best.pth is "
            "written, only last.pth)", "run", T, kind="negated", flag="--no-val-loss"),
    Setting("workers", 2, "data loader worker processes", "run", ("train", "get_map", "ablate"), type=int,
            tool_defaults={"get_map": 0}),
    Setting("device", "auto", "auto (CUDA when present), cpu, cuda or cuda:N", "run",
            ("train", "get_map", "predict", "ablate", "quantize"), tool_defaults={"quantize": "cpu"}),
    Setting("seed", 0, "random seed: the same seed gives the same losses on CPU (anchors: the k-means seed)", "run",
            ("train", "anchors"), type=int),
    Setting("amp", "auto", "mixed precision of the network (decoding and NMS stay fp32; predict, get_map: "
            "torch and openvino backends, onnx runs fp32): auto picks bf16 on CPUs and GPUs that support it, fp16 on other "
            "GPUs, else off", "run", ("train", "get_map", "predict",
            "quantize"), choices=AMP_CHOICES),
    Setting("ema", True, "turn off the EMA of the weights", "run", T, kind="negated", flag="--no-ema"),
    Setting("ema_tau", 2000.0, "EMA warm-up: the decay ramps up as 1 - exp(-updates / tau)", "run", T, type=float),
    Setting("sync_bn", False, "SyncBatchNorm under torchrun on GPUs", "run", T, kind="flag"),
    Setting("channels_last", "on", "channels-last memory format (faster in every setting measured: fp32 and bf16 "
            "on CPU)", "run", T, choices=("on", "off")),
    Setting("grad_clip", 10.0, "clip the gradients' total L2 norm to this (0: off); a step with non-finite "
            "gradients is always skipped", "run", T, type=float),
    Setting("quiet", False, "no progress bars (ablate.py: train.py's output is not echoed; it is still in logs/)",
            "run", TA, kind="flag"),
    Setting("compile", "off", "torch.compile (inductor, needs a C++ compiler) the model: eval for the validation "
            "loss and the mAP evaluation, all for the training step (forward and backward) too; compiling takes "
            "about a minute per mode; where it fails the run goes on eagerly, said once; may change on --resume",
            "run", T, choices=("off", "eval", "all")),
    Setting("cache", "none", "ram: decode the training and validation images once, before the first epoch, and "
            "keep them in memory (refused before it is filled when they would not fit in the memory available; "
            "the batches are the same as without it); may change on --resume", "run", T, choices=("none", "ram")),
    Setting("logger", "none", "also log results.csv's columns (steps: epochs) and the run's pictures (labels.png, "
            "train_batch0.jpg, the F1 and PR curves of each evaluation) as TensorBoard events in the run folder; "
            "needs `pip install tensorboard`; view with tensorboard --logdir logs (ablate.py: --logdir OUT/runs, "
            "every variant and seed overlaid)", "run", TA, choices=("none", "tensorboard")),
)
TRAINING = MODEL + DATA + SCHEDULE + AUGMENTATION + LOSS + RUN
