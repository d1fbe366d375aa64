"""Reading weights files: any supported checkpoint, a model built from one, loading what matches.

Below the training engine (which writes checkpoints: utils/engine/checkpoint.py), so that inference
(yolo.py, evaluation, CAM, export) reads weights without importing it.

Our checkpoint is a dict with `format` == CHECKPOINT_FORMAT and:
  model (state dict; EMA weights when EMA is on), class_names, anchors (list of [w, h]),
  anchors_mask, attention (spec string), fusion (the FPN merge; absent in older files, meaning
  concat), se_loss (bool: enc blocks hold SE-loss heads; absent means False), input_size ([h, w]),
  scale_x_y, epoch, args (dict), and for resuming: optimizer, scheduler, scaler, ema, best_fitness.
The reference implementation's .pth files are a bare state dict; darknet files end in `.weights`.
A `format` tag other than CHECKPOINT_FORMAT (a newer version's) is refused, never read as a bare state dict.
tests/fixtures/ holds a file of each kind this version reads (tests/fixtures/make_checkpoints.py).

Before torch.load, the file is checked (check_weights_file): an ONNX graph or another kind of file is named
as such, and a zip archive (what torch.save writes) whose records would inflate beyond the file's own size
(torch stores them uncompressed: a zip bomb or a damaged file) is refused without inflating anything.
"""
import pickle
import re
import zipfile
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from nets.darknet import darknet_file_classes, load_darknet_weights
from nets.yolo import YoloBody
from utils.core.config import DEFAULT_ANCHORS_MASK, read_anchors
from utils.core.detector_spec import OLDER_DEFAULTS, RECORD_KEYS, DetectorSpec
from utils.core.paths import DEFAULT_ANCHORS_FILE

CHECKPOINT_FORMAT = "yolov4-tiny-attention/1"
FORMAT_FAMILY = CHECKPOINT_FORMAT.rsplit("/", 1)[0]
READS = (f"{CHECKPOINT_FORMAT!r} checkpoints, bare state dicts (the reference repository's .pth) and "
         "{'model': ...} dicts")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save since PyTorch 1.6
PICKLE_MAGIC = b"\x80"  # the legacy torch.save: a pickle (protocol 2 or later)
ONNX_HINT = ("training reads checkpoints (.pth, darknet .weights); predict.py and get_map.py run ONNX graphs "
             "named .onnx: python get_map.py --weights {graph} --data DATA [--backend openvino] scores it")


def read_checkpoint(path) -> Dict:
    """Load a .pth file as a dict: ours (with metadata) or {'model': state_dict} for a bare state dict.

    Weights files are untrusted input: they are unpickled with weights_only=True, so a file that
    asks to build any object beyond tensors, containers, numbers and strings (and numpy scalars,
    which older checkpoints may hold) is refused and nothing in it runs.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder; give a weights file in it (best.pth, last.pth)" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"weights file {path} {what}")
    check_weights_file(path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: not a plain weights file: it asks to run or build {_pickled_global(e)}, "
                         "which a weights file never needs; refused, nothing in it was run") from None
    except Exception as e:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {_first_line(e)})") from None
    if isinstance(obj, dict) and "format" in obj:
        return _tagged(obj, path)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        return {"model": obj["model"]}
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"model": obj}  # the reference implementation's bare state dict
    raise ValueError(f"{path}: expected a state dict or a checkpoint written by train.py, found {type(obj).__name__}")


def _tagged(ckpt: Dict, path: Path) -> Dict:
    """Our checkpoint, or ValueError for a format tag this version does not read."""
    found = str(ckpt["format"])[:80]
    if found == CHECKPOINT_FORMAT:
        return ckpt
    newer = found.startswith(FORMAT_FAMILY + "/")
    raise ValueError(f"{path}: checkpoint format {found!r}, which this version does not read (it reads {READS}); "
                     + ("it was written by a newer version of this project: update this copy to read it"
                        if newer else "convert it with the tool that wrote it"))


def check_weights_file(path: Path) -> None:
    """ValueError, naming `path`, unless it looks like a torch.save file whose records fit in the file.

    Run before torch.load: an ONNX graph (suffix or protobuf start) or another kind of file gets its own
    message, and a zip whose records declare more bytes than the file holds is refused before anything is
    inflated.
    """
    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":  # ModelProto starts with ir_version (field 1)
        graph = path if path.suffix.lower() == ".onnx" else f"{path.with_suffix('.onnx')} (the file renamed)"
        raise ValueError(f"{path}: an ONNX graph, not a PyTorch checkpoint: " + ONNX_HINT.format(graph=graph))
    if head.startswith(ZIP_MAGIC):
        _check_zip_records(path)
    elif not head.startswith(PICKLE_MAGIC):
        raise ValueError(f"{path}: not a PyTorch checkpoint: it starts with {head!r}, neither a zip archive "
                         "(torch.save) nor a pickle (older torch.save); give a .pth checkpoint or darknet .weights")


def _check_zip_records(path: Path) -> None:
    """Sum the sizes the zip's central directory declares, without inflating a record."""
    limit = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (a damaged zip archive: "
                         f"{_first_line(e)})") from None
    declared = sum(r.file_size for r in records)
    if declared > limit:
        biggest = max(records, key=lambda r: r.file_size)
        raise ValueError(f"{path}: its zip records would inflate to {declared} bytes ({biggest.filename}: "
                         f"{biggest.file_size}), more than the {limit} bytes allowed (the file's size: torch.save "
                         "stores records uncompressed); refused before reading: a zip bomb or a damaged file")


def _numpy_safe_globals() -> list:
    """numpy scalars and dtypes, as a checkpoint whose metrics were numpy floats holds them."""
    import numpy as np
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray.scalar, np.dtype, *(type(np.dtype(t)) for t in ("float64", "float32", "int64", "bool"))]


def _pickled_global(error: Exception) -> str:
    """The Python object the unpickler refused, as torch's message names it (`GLOBAL module.name`)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return found.group(1) if found else "an object other than tensors"


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def load_matching(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor]) -> Tuple[int, List[str]]:
    """Copy the tensors whose name and shape match; return (loaded count, descriptions of the rest)."""
    own = model.state_dict()
    matched, skipped = {}, []
    for name, tensor in state_dict.items():
        name = name[len("module."):] if name.startswith("module.") else name
        if name not in own:
            skipped.append(f"{name} (not in this model)")
        elif own[name].shape != tensor.shape:
            skipped.append(f"{name} (shape {tuple(tensor.shape)} in file, {tuple(own[name].shape)} in model)")
        else:
            matched[name] = tensor
    missing = [n for n in own if n not in matched and not n.endswith("num_batches_tracked")]
    model.load_state_dict(matched, strict=False)
    skipped += [f"{n} (missing from file)" for n in missing if n not in state_dict]
    return len(matched), skipped


def read_state_dict(model: torch.nn.Module, path) -> Dict[str, torch.Tensor]:
    """The state dict in `path`; a darknet `.weights` file is read through a YoloBody of its own class count."""
    if not str(path).endswith(".weights"):
        return read_checkpoint(path)["model"]
    classes = darknet_file_classes(model, path)
    donor = YoloBody(model.anchors_mask, classes or model.num_classes)
    load_darknet_weights(donor, path)  # raises, naming expected and found sizes, for a file that does not fit
    return donor.state_dict()


def load_weights(model: torch.nn.Module, path, verbose: bool = True) -> Tuple[int, List[str]]:
    """Load our checkpoint, a reference .pth or a darknet .weights file into `model`, by name and shape."""
    loaded, skipped = load_matching(model, read_state_dict(model, path))
    if verbose:
        total = len(model.state_dict())
        print(f"loaded {loaded} tensors from {path} ({total} in the model)")
        if skipped:
            print(f"not loaded ({len(skipped)}): " + "; ".join(skipped[:20]) + (" ..." if len(skipped) > 20 else ""))
    return loaded, skipped


def checkpoint_spec(ckpt: Dict, is_darknet: bool = False, where="the checkpoint", **given) -> DetectorSpec:
    """The DetectorSpec of a read checkpoint (read_checkpoint; {} for darknet .weights), today's or older
    (utils/core/detector_spec.py), with the `given` facts (DetectorSpec field names; None: the file's) put
    over the file's; `where` names the file in errors. Files without facts (reference .pth, darknet) get the
    default anchors and mask, 416x416, scale_x_y 1.0 (darknet: 1.05) and the classes given."""
    record = {"anchors_mask": DEFAULT_ANCHORS_MASK, "input_size": [416, 416], "strides": YoloBody.strides,
              "scale_x_y": 1.05 if is_darknet else 1.0, **OLDER_DEFAULTS}
    record.update({k: ckpt[k] for k in RECORD_KEYS if _present(ckpt.get(k))})
    record.update({k: v for k, v in given.items() if _present(v)})
    if "anchors" not in record:
        record["anchors"] = read_anchors(DEFAULT_ANCHORS_FILE)
    if not record.get("class_names"):
        raise ValueError(f"{where} does not name its classes; give a classes file (--classes)")
    try:
        return DetectorSpec(**record)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def _present(value) -> bool:
    """A fact given: not None, and not an empty name, list or tensor."""
    if value is None:
        return False
    if isinstance(value, torch.Tensor):
        return value.numel() > 0
    return bool(value) if isinstance(value, (str, list, tuple)) else True


def load_detector(path, class_names=None, attention=None, anchors=None, anchors_mask=None, input_size=None,
                  scale_x_y=None, fusion=None) -> Tuple[YoloBody, DetectorSpec]:
    """Build a YoloBody and load `path` into it; returns (model, its DetectorSpec).

    Our checkpoints carry their own spec (class names, anchors, attention, fusion, input size, scale_x_y);
    arguments given here are only needed for (and override) reference .pth and darknet .weights
    files, which are concat models. The model is built for the spec's input size, which matters only to
    blocks fixed to one map size (cbam_joint).
    """
    is_darknet = str(path).endswith(".weights")
    ckpt = {} if is_darknet else read_checkpoint(path)
    given = dict(class_names=class_names, attention=attention, anchors=anchors, anchors_mask=anchors_mask,
                 input_size=input_size, scale_x_y=scale_x_y, fusion=fusion)
    spec = checkpoint_spec(ckpt, is_darknet, path, **given)
    model = YoloBody([list(m) for m in spec.anchors_mask], spec.num_classes, attention=spec.attention,
                     fusion=spec.fusion, input_size=list(spec.input_size), se_loss=spec.se_loss)
    if is_darknet:
        load_darknet_weights(model, path)
        return model, spec
    _check_fits(model, ckpt["model"], spec, path)
    model.load_state_dict(ckpt["model"], strict=False)
    return model, spec


def _check_fits(model: YoloBody, state: Dict, spec: DetectorSpec, path) -> None:
    own = model.state_dict()
    mismatched = [n for n, t in state.items() if n in own and own[n].shape != t.shape]
    missing = [n for n in own if n not in state and not n.endswith("num_batches_tracked")]
    unexpected = [n for n in state if n not in own]
    if mismatched or missing or unexpected:
        raise ValueError(
            f"{path} does not fit a model with {spec.num_classes} classes, attention "
            f"{spec.attention!r} and fusion {spec.fusion!r}: "
            f"{len(mismatched)} tensors of another shape (e.g. {mismatched[:2]}), "
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}); "
            "check --classes, --phi/--attention and --fusion")


def model_from_weights(path, class_names=None, attention=None, anchors=None, anchors_mask=None,
                       input_size=None, scale_x_y=None, fusion=None):
    """load_detector's (model, meta) with the spec as the dict callers read before DetectorSpec: class_names,
    anchors (Tensor[A, 2]), anchors_mask, attention, fusion, se_loss, input_size ([h, w]), scale_x_y.
    For callers not yet moved to load_detector; new code reads the spec."""
    model, spec = load_detector(path, class_names, attention, anchors, anchors_mask, input_size, scale_x_y, fusion)
    record = spec.record()
    meta = {k: record[k] for k in ("class_names", "anchors_mask", "attention", "fusion", "se_loss", "input_size",
                                   "scale_x_y")}
    return model, {**meta, "anchors": spec.anchor_tensor()}
