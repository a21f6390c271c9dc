"""The worker process: RQ drain jobs that send requests upstream, and the sweep."""
