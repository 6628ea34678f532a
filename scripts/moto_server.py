"""moto's server, as the tests run it.

Usage: python moto_server.py HOST PORT [--serial]

Four departures from `moto_server`, each for a gap in moto (pinned in
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
- Every DB instance gets a `DbiResourceId` of its own (moto gives all the same
  one): dbroles records which organisation owns a server by that id, and an
  instance created again under an old name must be a new server.
- STS honours a role's trust policy on `sts:ExternalId`: a role that exists in
  moto's IAM and names an ExternalId in its trust policy refuses any other
  (moto lets anyone assume anything). Roles that do not exist stay assumable,
  as the rest of the tests rely on.
"""

import json
import random
import string

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


from moto.rds.models import DBInstance  # noqa: E402

_instance_init = DBInstance.__init__


def instance_init(self, *args, **kwargs):
    _instance_init(self, *args, **kwargs)
    self.dbi_resource_id = "db-" + "".join(random.choices(string.ascii_uppercase + string.digits, k=26))


DBInstance.__init__ = instance_init


from moto.iam.models import iam_backends  # noqa: E402
from moto.sts.exceptions import STSClientError  # noqa: E402
from moto.sts.models import STSBackend  # noqa: E402

_assume_role = STSBackend.assume_role


def required_external_ids(role_arn):
    """The ExternalIds the role's trust policy allows, or None if it names none (or the role does not exist)."""
    parts = role_arn.split(":")
    try:
        role = iam_backends[parts[4]][parts[1]].get_role_by_arn(role_arn)
    except Exception:
        return None
    allowed = None
    for statement in json.loads(role.assume_role_policy_document).get("Statement", []):
        for operator, conditions in statement.get("Condition", {}).items():
            for key, values in conditions.items():
                if key.lower() == "sts:externalid" and operator.startswith("StringEquals"):
                    allowed = (allowed or set()) | set([values] if isinstance(values, str) else values)
    return allowed


def assume_role(self, region_name, role_session_name, role_arn, policy, duration, external_id):
    allowed = required_external_ids(role_arn)
    if allowed is not None and external_id not in allowed:
        raise STSClientError(
            "AccessDenied", f"User is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
        )
    return _assume_role(self, region_name, role_session_name, role_arn, policy, duration, external_id)


STSBackend.assume_role = assume_role

host, port = sys.argv[1], int(sys.argv[2])
app = DomainDispatcherApplication(create_backend_app)
one_at_a_time = threading.Lock()


def serial(environ, start_response):
    with one_at_a_time:
        # The body is read inside the lock too: a response is complete before the next request runs.
        return list(app(environ, start_response))


run_simple(host, port, serial if "--serial" in sys.argv[3:] else app, threaded=True, request_handler=MotoRequestHandler)
