"""Running the whole system on one machine: embedded Redis, sandbox, web, worker."""
