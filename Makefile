# tpslab: `make demo` sets up .venv and runs the main job on the small profile;
# `make test` sets up .venv and runs the tests (unit tests, then the notebooks under nbval).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tpslab-installed
PROFILE ?= smoke
NBVAL_DIR ?= $(CURDIR)/.nbval-run

.PHONY: report site install demo test unit nbval reproduce compare notebooks lint bench gpu-check-small course clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,notebooks,medical,cluster]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tpslab)" > /dev/null
	@touch $(STAMP)

demo: install
	$(PY) -m tpslab demo --profile $(PROFILE)

test: install unit nbval

unit: install
	$(PY) -m pytest tests

# Re-executes every notebook with its default (smoke) parameters and compares the cells marked
# NBVAL_CHECK_OUTPUT with the outputs stored in the committed .ipynb; results go to a scratch folder.
nbval: install
	rm -rf $(NBVAL_DIR)
	cd notebooks && TPSLAB_RESULTS=$(NBVAL_DIR)/results TPSLAB_DATA=$(NBVAL_DIR)/data TPSLAB_CACHE=$(NBVAL_DIR)/cache \
		$(CURDIR)/$(PY) -m pytest --nbval-lax --nbval-sanitize-with ../tests/nbval_sanitize.cfg \
		--nbval-kernel-name python3 -p no:cacheprovider .

reproduce: install
	$(PY) -m tpslab reproduce --profile $(PROFILE)

# Every method of the profile on its data sets: Tables 1-3 and Figure 3, two protocols, bootstrap intervals,
# under results/<profile>/compare/ (EXECUTOR=local-parallel JOBS=2 for submitit's local processes).
EXECUTOR ?= local
JOBS ?= 2
compare: install
	$(PY) -m tpslab compare --profile $(PROFILE) --executor $(EXECUTOR) --jobs $(JOBS)

# Rebuild notebooks/*.ipynb from the .py files and execute them with smoke (what nbval compares).
notebooks: install
	$(PY) -m tpslab.reproduce sync

# Every benchmarks/bench_*.py at its --quick size (CSVs under results/benchmarks/), then one figure of them.
# Under 10 minutes on a 2-core CPU; drop --quick in a script's own command line for the full sizes.
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
	rm -rf $(NBVAL_DIR) $(GPU_CHECK_DIR) $(COURSE_DIR) .pytest_cache

# A static offline web site of results/$(PROFILE)/ (tables, galleries of stored maps, training curves).
report: install
	$(PY) -m tpslab report --profile $(PROFILE) --force

# The same site with the executed notebooks rendered (equations by MathJax served from the site).
site: install
	$(PY) -m tpslab report --profile $(PROFILE) --notebooks --force
