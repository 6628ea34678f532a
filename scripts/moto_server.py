"""moto's server, as the tests run it.

Usage: python moto_server.py HOST PORT [--serial]

Two departures from `moto_server`, each for a gap in moto (pinned in
requirements-test.txt) that real AWS does not have:

- `--serial` handles one request at a time. moto's DynamoDB transactions are not
  atomic when requests arrive concurrently (DynamoDB's are): a failed transaction
  restores a snapshot taken before a concurrent one wrote. The store tests race
  50 creates for one instance, so the shared moto of scripts/test is serial.
- Step Functions' `states:startExecution` integration works. moto's executor
  passes a Task's parameters to boto3 as written (`StateMachineArn`, `Name`,
  `Input`) where the Step Functions API names them `stateMachineArn`, `name`,
  `input`, and hands boto3's response on as boto3 cases it (`executionArn`,
  `output`) where Step Functions gives `ExecutionArn`, `Output`. Every
  `startExecution`, `.sync` and `.sync:2` Task fails with `States.Runtime`
  (a KeyError naming the first parameter). The fleet definition's Map starts
  the provisioning machine that way, so the service integration here maps the
  names both ways, as Step Functions does.
"""

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
    StateTaskServiceSfn,
)
from werkzeug.serving import run_simple


def _recased(fields: dict, first_letter) -> dict:
    return {first_letter(name[:1]) + name[1:]: value for name, value in fields.items()}


_normalise_parameters = StateTaskServiceSfn._normalise_parameters


def normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None):
    """The Task's `StateMachineArn`, `Name`, `Input` as the API's `stateMachineArn`, `name`, `input`."""
    _normalise_parameters(self, parameters, boto_service_name, service_action_name)
    recased = _recased(parameters, str.lower)
    parameters.clear()
    parameters.update(recased)


def normalise_response(self, response, boto_service_name=None, service_action_name=None):
    """boto3's `executionArn`, `output`, ... as the integration's `ExecutionArn`, `Output`, ..."""
    if isinstance(response, dict):
        recased = _recased(response, str.upper)
        response.clear()
        response.update(recased)


StateTaskServiceSfn._normalise_parameters = normalise_parameters
StateTaskServiceSfn._normalise_response = normalise_response

host, port = sys.argv[1], int(sys.argv[2])
app = DomainDispatcherApplication(create_backend_app)
one_at_a_time = threading.Lock()


def serial(environ, start_response):
    with one_at_a_time:
        # The body is read inside the lock too: a response is complete before the next request runs.
        return list(app(environ, start_response))


run_simple(host, port, serial if "--serial" in sys.argv[3:] else app, threaded=True, request_handler=MotoRequestHandler)
