"""Developer tools: the dependency lock file and the portable check of trained numbers."""
