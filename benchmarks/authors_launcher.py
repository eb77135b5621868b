"""Running the authors' TPS scripts (``train.py``, ``test.py``) unchanged on this machine, for side-by-side timing.

Their checkout is given to a benchmark with ``--reference PATH``; it is never part of this
repository, and nothing here is imported by the tests. :data:`LAUNCHER`, written next to the
run's files at run time, runs one of their scripts in their folder after a few stand-ins:

1. packages their imports name that this environment lacks and that the measured work does not
   use: ``pkg_resources.packaging``, ``thop`` (training) and ``tabulate`` (the final table of
   ``test.py``; the stand-in prints the rows as plain lines);
2. no CUDA here: their ``.cuda()`` calls return the tensor where it is;
3. their loader downloads OpenAI's ViT-L/14@336px: it gets a local file of random weights in
   their own format instead (:data:`MAKE_WEIGHTS`, made by their own ``CLIP`` class and stored in
   float16 as OpenAI's file is; their loader casts it to float32 on the CPU);
4. their class-name table only knows the real data sets: it gets the synthetic classes;
5. their empty mask of a normal image is a float64 array given to ``Image.fromarray`` with mode
   "L", which Pillow >= 11 refuses: the same zeros as uint8.

:data:`MAKE_CHECKPOINT` (run through the launcher) writes a checkpoint in the format their
``train.py`` saves (``prompt_learner``, ``class_learner``, ``former``) with their modules'
initial (random) values, for their ``test.py`` and ``tpslab evaluate --authors-checkpoint``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

# the authors' CLIP class arguments for ViT-L/14@336px (OpenAI's): embed dim, resolution, vision
# layers, width, patch, then text context, vocabulary, width, heads, layers
AUTHORS_VIT_L = (768, 336, 24, 1024, 14, 77, 49408, 768, 12, 12)
# the same class at tpslab-ref24's dims with 14 px patches (24 blocks of width 128, text 12 of width 128; heads =
# width / 64 as their loader infers): 37 x 37 tokens at 518 px as ViT-L-14-336, a far cheaper forward
AUTHORS_REF24_P14 = (64, 224, 24, 128, 14, 77, 49408, 128, 2, 12)

# Imported first by every script below (run in the authors' folder): stand-in 1.
STUBS = r'''
import importlib.machinery, sys, types
import packaging.version
sys.modules.setdefault("pkg_resources", types.SimpleNamespace(packaging=packaging))
for _name, _attrs in (("thop", {"profile": None}),
                      ("tabulate", {"tabulate": lambda rows, headers=(), **kw: "\n".join(
                          " | ".join(map(str, r)) for r in [list(headers), *rows])})):
    if _name not in sys.modules:
        try:
            __import__(_name)
        except ImportError:  # a module with a spec: torch's import-time checks look modules up by name
            sys.modules[_name] = types.ModuleType(_name)
            sys.modules[_name].__spec__ = importlib.machinery.ModuleSpec(_name, None)
            sys.modules[_name].__dict__.update(_attrs)
'''

# argv[1]: a JSON file {"weights", "data", "threads", "script", "argv"}; runs in the authors' folder.
LAUNCHER = r'''
import json, runpy, sys, time
''' + STUBS + r'''
from pathlib import Path

cfg = json.loads(Path(sys.argv[1]).read_text())
import torch
torch.set_num_threads(int(cfg["threads"]))
if not torch.cuda.is_available():  # 2.
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
sys.path.insert(0, ".")
import AnomalyCLIP_lib.model_load as model_load  # 3.
model_load._download = lambda url, root=None: cfg["weights"]
# (a state dict, not a TorchScript archive as OpenAI's: their fallback re-reads the file that the failed
# torch.jit.load left at its end, so the failed try rewinds it first)
_jit_load = torch.jit.load
def _rewinding_jit_load(f, *args, **kwargs):
    try:
        return _jit_load(f, *args, **kwargs)
    except RuntimeError:
        f.seek(0)
        raise
torch.jit.load = _rewinding_jit_load
import dataset  # 4.
classes = list(json.loads(Path(cfg["data"], "meta.json").read_text())["test"])
dataset.generate_class_info = lambda name: (classes, {c: i for i, c in enumerate(classes)})
import numpy as np  # 5.
from PIL import Image
_fromarray = Image.fromarray
def _fromarray_l(obj, mode=None):
    if mode == "L" and getattr(obj, "dtype", np.uint8) != np.uint8:
        obj = obj.astype(np.uint8)
    return _fromarray(obj, mode=mode) if mode else _fromarray(obj)
Image.fromarray = _fromarray_l
sys.argv = [cfg["script"], *cfg["argv"]]
start = time.perf_counter()
runpy.run_path(cfg["script"], run_name="__main__")
print(json.dumps({"script_s": time.perf_counter() - start}))
'''

MAKE_WEIGHTS = r'''
import sys
''' + STUBS + r'''
sys.path.insert(0, ".")
import torch
from AnomalyCLIP_lib.CLIP import CLIP
torch.manual_seed(0)
model = CLIP(*[int(a) for a in sys.argv[2].split(",")])
torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, sys.argv[1])
'''

# Run through LAUNCHER (argv: the output file); the modules as their train.py builds them, before any step.
MAKE_CHECKPOINT = r'''
import sys
import torch
import AnomalyCLIP_lib
from prompt_ensemble import AnomalyCLIP_PromptLearner
torch.manual_seed(0)
params = {"Prompt_length": 12, "learnabel_text_embedding_depth": 9, "learnabel_text_embedding_length": 4}
model, _ = AnomalyCLIP_lib.load("ViT-L/14@336px", device="cpu", design_details=params)
prompt_learner = AnomalyCLIP_PromptLearner(model, params)
class_learner = AnomalyCLIP_PromptLearner(model, params, classnames=["part"],
                                          state_list=["the flawless {}", "the damaged {}"])
former = AnomalyCLIP_lib.PathWay(model.text_projection, model.visual.proj)
torch.save({"prompt_learner": prompt_learner.state_dict(), "class_learner": class_learner.state_dict(),
            "former": former.state_dict()}, sys.argv[1])
'''


def child_env(threads: int, cache: Path | None = None) -> dict[str, str]:
    """The environment of a measured run: the thread count fixed, warnings off, optional tpslab cache folder."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    if cache is not None:
        env["TPSLAB_CACHE"] = str(cache)
    return env


def timed(cmd: list[str], cwd: Path | None, env: dict[str, str], log: Path) -> float:
    """Run ``cmd`` to the end, its output in ``log``; return its wall-clock seconds (raise if it fails)."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{cmd[:4]} failed ({done.returncode}); its output: {log}\n" + log.read_text()[-3000:])
    return seconds


def make_weights(reference: Path, weights: Path, threads: int, dims: tuple[int, ...] = AUTHORS_VIT_L) -> Path:
    """Random weights in the authors' format (their ``CLIP`` class at ``dims``, seed 0, float16; ViT-L/14@336px)."""
    subprocess.run([sys.executable, "-c", MAKE_WEIGHTS, str(weights), ",".join(map(str, dims))],
                   cwd=reference, check=True, env=child_env(threads))
    return weights


def run_script(reference: Path, script: str, argv: list[str], weights: Path, data: Path, threads: int,
               log: Path) -> float:
    """One of the authors' scripts (a file name in their folder, or a path) through :data:`LAUNCHER`; its seconds.

    The launcher and its JSON settings are written next to ``log``.
    """
    launcher = log.parent / "authors_launcher_run.py"
    launcher.write_text(LAUNCHER)
    cfg = log.with_suffix(".json")
    cfg.write_text(json.dumps({"weights": str(weights), "data": str(data), "threads": threads, "script": script,
                               "argv": argv}))
    return timed([sys.executable, str(launcher), str(cfg)], reference, child_env(threads), log)


def make_checkpoint(reference: Path, checkpoint: Path, weights: Path, data: Path, threads: int) -> Path:
    """A checkpoint in the format of their ``train.py`` with their modules' initial values (seed 0)."""
    maker = checkpoint.parent / "make_authors_checkpoint.py"
    maker.write_text(MAKE_CHECKPOINT)
    run_script(reference, str(maker), [str(checkpoint)], weights, data, threads,
               checkpoint.parent / "make_authors_checkpoint.log")
    return checkpoint
