"""What tests share: the services a test run starts (services.py), calls through the public
API (api.py), callbacks signed as Plivo signs them (signed_callbacks.py), raw sockets
(raw_http.py), a notification receiver (notify_receiver.py), the fuzz tests' state and
strategies, and the memory report of a run (memory.py). Test modules import from here and
never from one another (tests/test_layout.py)."""
