"""``tpslab reproduce --profile NAME``: run the numbered notebooks in order with papermill.

Each notebook ``notebooks/NN_*.py`` (the jupytext twin of ``NN_*.ipynb``) is executed with
the parameters ``profile``, ``results_dir`` and ``data_dir``; the executed copies go to
``results/<profile>/notebooks/``, tables to ``results/<profile>/tables/`` and figures (PNG
and PDF) to ``results/<profile>/figures/``. Before anything runs, the profile is checked:
CLIP weights present (a local file, or in the cache; weights named by a tag that are not
cached are downloaded by the notebooks where there is internet), every real data set
prepared (its ``meta.json``), a GPU if the profile asks for one, and, with ``--only``, the
results of the earlier notebooks the chosen ones read.

``python -m tpslab.runs.reproduce sync`` rebuilds the committed ``notebooks/*.ipynb`` from the
``.py`` files and executes them with the default (``smoke``) parameters, stripping volatile
metadata but keeping cell tags and canonical execution counts (nbval needs both).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tpslab.backbone.loading import SHIPPED, missing_weights_reason
from tpslab.methods import method_module
from tpslab.profiles import Profile, data_root, load_profile, missing_datasets, results_root
from tpslab.utils import PROJECT, TPSLabError, configure_logging, project_path, shown

NOTEBOOKS = PROJECT / "notebooks"
KERNEL = "python3"
log = logging.getLogger(__name__)


def notebook_sources(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks (their ``.py`` twins), in order; ``only`` keeps those whose name starts so."""
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    if not found:
        raise TPSLabError(f"{NOTEBOOKS}: no numbered notebooks (tpslab reproduce needs a source checkout)")
    if only:
        unknown = [o for o in only if not any(p.stem.startswith(o) for p in found)]
        if unknown:
            raise TPSLabError(f"no notebook {unknown[0]!r}; there are: {', '.join(p.stem for p in found)}")
        found = [p for p in found if any(p.stem.startswith(o) for o in only)]
    return found


def missing_weights(profile: Profile) -> str | None:
    """Why the CLIP weights of the profile's methods (TPS and the baselines) cannot be loaded here, or None.

    Looks at local files only. One problem per line (see :func:`missing_weight_lines`).
    """
    return "\n".join(missing_weight_lines(profile)) or None


def missing_weight_lines(profile: Profile) -> list[str]:
    """One line per set of CLIP weights of the profile's methods that is not at hand here (local files only)."""
    wanted = {(profile.model_config.backbone, profile.model_config.pretrained): ["model.pretrained"]}
    for method, settings in profile.methods.items():
        s = method_module(method).Settings.from_dict(settings)
        wanted.setdefault((s.backbone, s.pretrained), []).append(f"methods.{method}.pretrained")
    problems = [missing_weights_reason(n, w, keys) for (n, w), keys in sorted(wanted.items(), key=str)]
    return [p for p in problems if p]


def _is_download(profile: Profile) -> bool:
    """Whether the profile's weights come from open_clip's hub (a tag), rather than a local file or none."""
    name, pretrained = profile.model_config.backbone, profile.model_config.pretrained
    if not pretrained or pretrained == SHIPPED or name.startswith("local-dir:"):
        return False
    return not ("/" in pretrained or Path(pretrained).suffix)


def preflight(profile: Profile, data: Path, needs_data: bool = True) -> bool:
    """Raise one clear error if the profile cannot run here (local weights, data sets, GPU).

    Weights named by a tag that are not cached are not an error on their own: the notebooks
    try to download them (and fail with one line where there is no internet).

    Returns:
        Whether the CLIP weights are at hand (the kernels then run with ``HF_HUB_OFFLINE=1``).
    """
    import torch

    problems = []
    if profile.device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"it needs a GPU (device: {profile.device}) and none is visible")
    weights = missing_weights(profile)
    if weights and not _is_download(profile):
        problems.append(weights)
    missing = missing_datasets(profile, data) if needs_data else []
    if missing:
        problems.append(f"{len(missing)} data set(s) not prepared under {shown(data)}/ (get each as "
                        f"data/README.md says, then run): " + "; ".join(missing))
    if weights and problems and weights not in problems:
        problems.append(weights)  # worth knowing while the other problems are fixed
    if problems:
        raise TPSLabError(f"profile {profile.name!r} cannot run here: " + " | ".join(problems))
    if weights:
        log.info("note: %s", weights)
    return weights is None


# notebook -> (a file it reads under the results folder, the notebook that writes it)
NEEDS = {
    "02": [("data.json", "01")],
    "03": [("data.json", "01"), ("train/main/checkpoint.pt", "02")],
    "04": [("data.json", "01")],
    "05": [("data.json", "01"), ("train/main/checkpoint.pt", "02")],
    # 06 runs tpslab compare, which trains (or reuses 02's and 04's runs) and predicts what it needs
}


def missing_inputs(sources: list[Path], out_dir: Path) -> str | None:
    """What the chosen notebooks read that neither exists nor is written by an earlier one of them, or None."""
    chosen = {p.stem[:2] for p in sources}
    for source in sources:
        missing = [(rel, writer) for rel, writer in NEEDS.get(source.stem[:2], [])
                   if writer not in chosen and not (out_dir / rel).exists()]
        if missing:
            files = ", ".join(shown(out_dir / rel) for rel, _ in missing)
            writers = " and ".join(dict.fromkeys(writer for _, writer in missing))
            return f"notebook {source.stem} needs {files}: run {writers} first (or reproduce without --only)"
    return None


def _read_notebook(source: Path):
    import jupytext

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": KERNEL}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{source.stem[:2]}-{i:02d}"  # stable ids: clean diffs
    return nb


def _kernel_env(offline: bool = True) -> None:
    """Set up the kernels' environment.

    Kernels see the checkout's tpslab (even when not pip-installed), never download weights
    when they are at hand (``offline``), and skip tqdm's warning that ipywidgets is missing
    (its text names a file of this machine).
    """
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    filters = [f for f in os.environ.get("PYTHONWARNINGS", "").split(",") if f]
    os.environ["PYTHONWARNINGS"] = ",".join(dict.fromkeys([*filters, "ignore:IProgress not found"]))
    if (PROJECT / "tpslab").is_dir():
        paths = [str(PROJECT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send this process's (and so the kernel's) stderr to a file: kernel start-up chatter, papermill logs."""
    saved = os.dup(2)
    with open(path, "w") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def run_notebook(source: Path, dest: Path, parameters: dict | None, cwd: Path, log: Path) -> float:
    """Execute one notebook into ``dest`` (kernel stderr to ``log``); return seconds.

    Raises:
        TPSLabError: naming the notebook, the error and the partly executed copy.
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(_read_notebook(source), dest)
    t0 = time.time()
    try:
        with _stderr_to(log):
            papermill.execute_notebook(dest, dest, parameters=parameters, kernel_name=KERNEL, progress_bar=False,
                                       cwd=str(cwd))
    except PapermillExecutionError as err:
        raise TPSLabError(f"notebook {source.stem} failed: {err.ename}: {err.evalue.strip()} "
                          f"(the partly executed copy is {shown(dest)})") from err
    except (RuntimeError, OSError, TimeoutError) as err:  # the kernel died or did not start
        raise TPSLabError(f"notebook {source.stem} stopped: {err.__class__.__name__}: {str(err).strip()[:300]} "
                          f"(kernel log: {shown(log)}; partly executed copy: {shown(dest)})") from err
    return time.time() - t0


def reproduce(profile: str = "smoke", out: str | None = None, data: str | None = None,
              only: list[str] | None = None) -> int:
    """Run the notebooks of ``profile`` in order; print where everything went. Returns the exit code."""
    prof = load_profile(profile)
    out_dir = project_path(out or results_root() / prof.name)
    data_dir = project_path(data_root(data))
    sources = notebook_sources(only)
    missing = missing_inputs(sources, out_dir)
    if missing:
        raise TPSLabError(missing)
    at_hand = preflight(prof, data_dir, needs_data=any(not p.stem.startswith("00") for p in sources))
    _kernel_env(offline=at_hand)
    t0 = time.time()
    log.info("profile %s: %s", prof.name, prof.description)
    params = {"profile": str(profile), "results_dir": str(out_dir), "data_dir": str(data_dir)}
    for i, source in enumerate(sources, 1):
        log.info("[%d/%d] %s ...", i, len(sources), source.stem)
        dest = out_dir / "notebooks" / f"{source.stem}.ipynb"
        try:
            seconds = run_notebook(source, dest, params, PROJECT, dest.with_suffix(".log"))
        except TPSLabError:
            log.info("[%d/%d] %s failed", i, len(sources), source.stem)
            raise
        log.info("[%d/%d] %s done in %.0f s", i, len(sources), source.stem, seconds)
    log.info("done in %.0f s; everything is in %s/:", time.time() - t0, shown(out_dir))
    for sub, what in (("notebooks", "the executed notebooks (and kernel logs)"),
                      ("tables", "tables: CSV, Markdown, LaTeX"),
                      ("figures", "figures: PNG and PDF")):
        if (out_dir / sub).is_dir():
            log.info("  %s/  %s (%d files)", sub, what, len(list((out_dir / sub).iterdir())))
    runs = sorted(str(p.parent.relative_to(out_dir)) for p in out_dir.glob("*/*/checkpoint.pt"))
    if runs:
        log.info("  checkpoints: %s", ", ".join(runs))
    return 0


def strip_notebook(path: Path) -> None:
    """Drop papermill/execution metadata and language_info, keep cell tags, number the code cells 1..N.

    nbval skips (and, with outputs, fails) a cell whose execution count is empty, so the counts
    stay, made canonical: the same on every run, so they never show up in a diff.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "jupytext")}
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k == "tags"}
    for n, cell in enumerate(code, 1):
        cell.execution_count = n
        for output in cell.outputs:
            if "execution_count" in output:
                output.execution_count = n
    nbformat.write(nb, path)


def sync_notebooks(execute: bool = True, only: list[str] | None = None) -> None:
    """Rebuild ``notebooks/NN_*.ipynb`` from the ``.py`` files; execute them with their defaults (smoke).

    Run it from the project root (``python -m tpslab.runs.reproduce sync``). It starts from scratch, as
    nbval does: the smoke results folder and synthetic data are removed first and the kernels get
    an empty feature cache, so the committed outputs never come from a finished run, data or
    cached features of an earlier checkout.
    """
    import shutil

    _kernel_env()
    smoke = load_profile("smoke")
    for folder in (project_path(results_root() / smoke.name), project_path(data_root() / smoke.data.root)):
        if only:  # a partial sync reads the earlier notebooks' results: rebuild all of them for a commit
            log.info("partial sync: reusing %s (sync every notebook before committing outputs)", shown(folder))
        elif folder.exists():
            log.info("removing %s (notebooks are rebuilt from scratch)", shown(folder))
            shutil.rmtree(folder)
    cache = tempfile.TemporaryDirectory(prefix="tpslab-sync-cache-")
    saved = os.environ.get("TPSLAB_CACHE")
    os.environ["TPSLAB_CACHE"] = cache.name
    try:
        _sync(execute, only)
    finally:
        if saved is None:
            del os.environ["TPSLAB_CACHE"]
        else:
            os.environ["TPSLAB_CACHE"] = saved
        cache.cleanup()


def _sync(execute: bool, only: list[str] | None) -> None:
    for source in notebook_sources(only):
        dest = source.with_suffix(".ipynb")
        if execute:
            kernel_log = Path(tempfile.gettempdir()) / f"tpslab-sync-{source.stem}.log"
            seconds = run_notebook(source, dest, None, NOTEBOOKS, kernel_log)
            log.info("%s -> %s executed in %.0f s", source.name, dest.name, seconds)
        else:
            import nbformat

            nbformat.write(_read_notebook(source), dest)
            log.info("%s -> %s", source.name, dest.name)
        strip_notebook(dest)


if __name__ == "__main__":
    configure_logging()
    args = sys.argv[1:]
    if not args or args[0] not in ("sync", "convert"):
        sys.exit("usage: python -m tpslab.runs.reproduce sync|convert [NN ...]"
                 "   (sync executes, convert only converts)")
    try:
        sync_notebooks(execute=args[0] == "sync", only=args[1:] or None)
    except TPSLabError as err:
        sys.exit(f"tpslab: error: {err}")
