# tpslab: `make demo` sets up .venv and runs the main job on the small profile;
# `make test` sets up .venv and runs the tests (unit tests, then the notebooks under nbval).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tpslab-installed
PROFILE ?= smoke
NBVAL_DIR ?= $(CURDIR)/.nbval-run

.PHONY: install lock nbval-portable demo test unit nbval reproduce compare notebooks lint bench gpu-check-small course report site site-test clean

install: $(STAMP)

EXTRAS := test,notebooks,medical,cluster
LOCK   := requirements/lock.txt

# Exact versions of every dependency (transitive ones too) from the committed lock, used as pip constraints.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(LOCK) -e ".[$(EXTRAS)]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tpslab)" > /dev/null
	@touch $(STAMP)

# Rebuild the lock in a throw-away venv: the project's extras installed within the current pins (a new
# dependency gets today's version), or with UPGRADE=1 from scratch at the newest versions the index serves;
# then environment.yml is regenerated from it. Run make test afterwards.
LOCK_VENV ?= .lock-venv
lock:
	rm -rf $(LOCK_VENV) && python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --disable-pip-version-check $(if $(UPGRADE),,-c $(LOCK)) -e ".[$(EXTRAS)]"
	{ sed -n '/^#/p' $(LOCK); $(LOCK_VENV)/bin/pip freeze --exclude-editable --disable-pip-version-check \
		| grep -viE '^tpslab[=@ ]' | LC_ALL=C sort -f; } > $(LOCK).new && mv $(LOCK).new $(LOCK)
	$(LOCK_VENV)/bin/python -m tpslab.dev.lockfile environment && $(LOCK_VENV)/bin/python -m tpslab.dev.lockfile check
	rm -rf $(LOCK_VENV)

# A second `make demo` is refused (a finished run is never replaced silently):
# `make demo DEMO_ARGS=--resume` continues or reuses it, `DEMO_ARGS=--force` starts again.
DEMO_ARGS ?=
demo: install
	$(PY) -m tpslab demo --profile $(PROFILE) $(DEMO_ARGS)

test: install unit nbval

unit: install
	$(PY) -m pytest tests

# Re-executes every notebook with its default (smoke) parameters and compares the cells marked
# NBVAL_CHECK_OUTPUT with the outputs stored in the committed .ipynb; results go to a scratch folder. The
# trained numbers (not nbval-checked: their last digits depend on the CPU) are then compared with
# tests/notebook_numbers.csv within tpslab.dev.portable's tolerances.
nbval: install
	rm -rf $(NBVAL_DIR)
	cd notebooks && TPSLAB_RESULTS=$(NBVAL_DIR)/results TPSLAB_DATA=$(NBVAL_DIR)/data TPSLAB_CACHE=$(NBVAL_DIR)/cache \
		$(CURDIR)/$(PY) -m pytest --nbval-lax --nbval-sanitize-with ../tests/nbval_sanitize.cfg \
		--nbval-kernel-name python3 -p no:cacheprovider .
	$(PY) -m tpslab.dev.portable check $(NBVAL_DIR)/results/smoke

reproduce: install
	$(PY) -m tpslab reproduce --profile $(PROFILE)

# Every method of the profile on its data sets: Tables 1-3 and Figure 3, two protocols, bootstrap intervals,
# under results/<profile>/compare/ (EXECUTOR=local-parallel JOBS=2 for submitit's local processes).
EXECUTOR ?= local
JOBS ?= 2
compare: install
	$(PY) -m tpslab compare --profile $(PROFILE) --executor $(EXECUTOR) --jobs $(JOBS)

# Rebuild notebooks/*.ipynb from the .py files and execute them with smoke (what nbval compares), then
# check them with the generic kernels (nbval-portable); if that fails the old outputs are restored.
NB_BACKUP ?= $(CURDIR)/.notebooks-backup
notebooks: install
	rm -rf $(NB_BACKUP) && mkdir -p $(NB_BACKUP) && cp notebooks/*.ipynb $(NB_BACKUP)/ \
		&& { cp tests/notebook_numbers.csv $(NB_BACKUP)/ 2>/dev/null || true; }
	$(PY) -m tpslab.runs.reproduce sync
	$(PY) -m tpslab.dev.portable record results/smoke
	@$(MAKE) --no-print-directory nbval-portable || { cp $(NB_BACKUP)/*.ipynb notebooks/; \
		if [ -f $(NB_BACKUP)/notebook_numbers.csv ]; then cp $(NB_BACKUP)/notebook_numbers.csv tests/; \
		else rm -f tests/notebook_numbers.csv; fi; \
		echo "refused: the generic kernels (ATEN_CPU_CAPABILITY=default) do not reproduce the new outputs;" \
		"the old notebooks are restored" >&2; exit 1; }
	rm -rf $(NB_BACKUP)

# The notebooks that train (02-04, after 00-01 which prepare their data) again under nbval, with PyTorch's
# generic CPU kernels instead of the native vector ones, in their own scratch folder: a stored output that
# only one kind of CPU reproduces fails here (CI runs it after make test). The trained numbers, which nbval
# does not compare, are then checked against tests/notebook_numbers.csv within tpslab.dev.portable's tolerances.
PORTABLE_DIR ?= $(CURDIR)/.nbval-portable-run
PORTABLE_NOTEBOOKS ?= 00_quickstart.ipynb 01_data_prep.ipynb 02_train.ipynb 03_evaluate.ipynb 04_ablations.ipynb
nbval-portable: install
	rm -rf $(PORTABLE_DIR)
	cd notebooks && ATEN_CPU_CAPABILITY=default TPSLAB_RESULTS=$(PORTABLE_DIR)/results \
		TPSLAB_DATA=$(PORTABLE_DIR)/data TPSLAB_CACHE=$(PORTABLE_DIR)/cache \
		$(CURDIR)/$(PY) -m pytest --nbval-lax --nbval-sanitize-with ../tests/nbval_sanitize.cfg \
		--nbval-kernel-name python3 -p no:cacheprovider $(PORTABLE_NOTEBOOKS)
	ATEN_CPU_CAPABILITY=default $(PY) -m tpslab.dev.portable check $(PORTABLE_DIR)/results/smoke --notebooks 02 03 04

# Every benchmarks/bench_*.py at its --quick size (CSVs under results/benchmarks/), then one figure of them.
# Under 10 minutes on a 2-core CPU; drop --quick in a script's own command line for the full sizes.
# Side-by-side ratios where the references are at hand (never part of this repo): TPSLAB_MUSC_REFERENCE=PATH,
# TPSLAB_TPS_REFERENCE=PATH (the authors' TPS checkout), TPSLAB_ANOMALIB_PYTHON=PATH (a python that imports anomalib).
bench: install
	@set -e; for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script --quick; done
	$(PY) benchmarks/plot_benchmarks.py --quick

# benchmarks/gpu_check.sh at CPU size (tiny model, --quick benchmarks, notebooks 00-01; about 1.5 minutes), so
# the GPU check's code runs in CI; on a CUDA machine run benchmarks/gpu_check.sh itself.
GPU_CHECK_DIR ?= $(CURDIR)/.gpu-check-run
gpu-check-small: install
	rm -rf $(GPU_CHECK_DIR)
	GPU_CHECK_SMALL=1 PYTHON=$(CURDIR)/$(PY) bash benchmarks/gpu_check.sh $(GPU_CHECK_DIR)

# The course kit: the student build (solutions out, outputs cleared) and the teacher build (executed) of the notebooks.
COURSE_DIR ?= $(CURDIR)/course-build
course: install
	$(PY) -m tpslab course build --student $(COURSE_DIR)/student --force
	$(PY) -m tpslab course build --teacher $(COURSE_DIR)/teacher --force

lint: install
	$(VENV)/bin/ruff check tpslab tests

clean:
	rm -rf $(NBVAL_DIR) $(GPU_CHECK_DIR) $(COURSE_DIR) $(PORTABLE_DIR) $(NB_BACKUP) .lock-venv .pytest_cache

# A static offline web site of results/$(PROFILE)/ (tables, galleries of stored maps, training curves).
report: install
	$(PY) -m tpslab report --profile $(PROFILE) --force

# The same site with the executed notebooks rendered (equations by MathJax served from the site).
site: install
	$(PY) -m tpslab report --profile $(PROFILE) --notebooks --force

# The site of the results `make nbval` left in $(NBVAL_DIR), then tests/test_site_browser.py in Chromium against
# it instead of its fake tree (TPSLAB_SITE_RESULTS). Not part of `make test`: run it after `make nbval`.
site-test: install
	@test -d $(NBVAL_DIR)/results/smoke || { echo "no $(NBVAL_DIR)/results/smoke: run make nbval first" >&2; exit 1; }
	$(PY) -m tpslab report --profile smoke --results-dir $(NBVAL_DIR)/results --data-dir $(NBVAL_DIR)/data --force
	TPSLAB_SITE_RESULTS=$(NBVAL_DIR)/results/smoke TPSLAB_SITE_DATA=$(NBVAL_DIR)/data \
		$(PY) -m pytest -p no:cacheprovider tests/test_site_browser.py
