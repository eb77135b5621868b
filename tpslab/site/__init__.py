"""``tpslab report``: one static, offline web site from what a run left under ``results/<profile>/``."""
