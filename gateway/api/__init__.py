"""HTTP surfaces: the OpenAI API, jobs, files and batches, admin, probes."""
