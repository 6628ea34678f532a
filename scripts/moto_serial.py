"""moto's server, handling one request at a time.

moto's DynamoDB transactions are not atomic when requests arrive concurrently
(DynamoDB's are): a failed transaction restores a snapshot taken before a
concurrent one wrote. The store tests race 50 creates for one instance, so the
shared moto of scripts/test serves requests one after another.

Usage: python moto_serial.py HOST PORT
"""

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

host, port = sys.argv[1], int(sys.argv[2])
app = DomainDispatcherApplication(create_backend_app)
one_at_a_time = threading.Lock()


def serial(environ, start_response):
    with one_at_a_time:
        # The body is read inside the lock too: a response is complete before the next request runs.
        return list(app(environ, start_response))


run_simple(host, port, serial, threaded=True, request_handler=MotoRequestHandler)
