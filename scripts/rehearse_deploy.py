"""The deploy rehearsal: template.yaml deployed to moto's CloudFormation.

The SAM transform runs here (samtranslator, as `sam deploy` has CloudFormation
run it), with placeholder code in moto's S3 and the state machine's definition
inlined. moto's CloudFormation cannot evaluate conditions inside resources
(`Fn::If` with `AWS::NoValue` in IAM policies fails in moto), so they are
resolved here from the parameters first. Then the stack must create, and what
it created is checked: the table, the roles and their policies, the rules, the
functions, and the state machine with its definition substituted. moto leaves
some things out; they are printed as such (README: "The deploy rehearsal").

    python scripts/rehearse_deploy.py http://127.0.0.1:<moto port> [deployed.json]

Given a second argument, it writes there the deployed state machine's definition
(substituted) and each function's name and environment, which
tests/tests/deployed.rs runs on moto's Step Functions.
"""

import json
import os
import re
import sys
import time

import boto3
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

PARAMETERS = {
    "JwtIssuer": "https://auth.example.com/",
    "JwtAudience": "dbroles",
    "SubnetIds": "subnet-12345678",
    "SecurityGroupIds": "sg-12345678",
    "VpcId": "vpc-12345678",
    "HomeAccountOrgs": "acme",
    "CrossAccountRoleName": "dbroles*",
}
NO_VALUE = object()


def translated(s3, bucket):
    """template.yaml through the SAM transform, its code in `bucket`."""
    template = yaml_parse(open("template.yaml").read())
    s3.put_object(Bucket=bucket, Key="code.zip", Body=b"PK\x05\x06" + b"\x00" * 18)
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://{bucket}/code.zip"
            resource.pop("Metadata", None)
        if resource["Type"] == "AWS::Serverless::StateMachine":
            uri = resource["Properties"].pop("DefinitionUri")
            resource["Properties"]["Definition"] = json.load(open(uri))

    class NoManagedPolicies:
        def load(self):
            return {}

    return transform(template, PARAMETERS, NoManagedPolicies())


def resolve_conditions(template):
    """The template with its conditions decided for PARAMETERS: what moto cannot do."""
    values = {name: p.get("Default", "") for name, p in template["Parameters"].items()}
    values.update(PARAMETERS)

    def value(x):
        if isinstance(x, dict) and "Ref" in x:
            return values[x["Ref"]]
        if isinstance(x, dict) and "Fn::Join" in x:
            separator, items = x["Fn::Join"]
            items = value(items)
            return separator.join(items if isinstance(items, list) else [items])
        return x

    def holds(condition):
        (function, args), = condition.items()
        return {
            "Fn::Equals": lambda: value(args[0]) == value(args[1]),
            "Fn::Not": lambda: not holds(args[0]),
            "Fn::And": lambda: all(holds(a) for a in args),
            "Fn::Or": lambda: any(holds(a) for a in args),
            "Condition": lambda: holds(template["Conditions"][args]),
        }[function]()

    decided = {name: holds(condition) for name, condition in template.get("Conditions", {}).items()}

    def resolve(x):
        if isinstance(x, dict):
            if "Fn::If" in x:
                name, then, otherwise = x["Fn::If"]
                return resolve(then if decided[name] else otherwise)
            if x == {"Ref": "AWS::NoValue"}:
                return NO_VALUE
            return {k: r for k, v in x.items() if (r := resolve(v)) is not NO_VALUE}
        if isinstance(x, list):
            return [r for v in x if (r := resolve(v)) is not NO_VALUE]
        return x

    kept = lambda section: {k: resolve(v) for k, v in section.items() if decided.get(v.get("Condition"), True)}
    template["Resources"] = kept(template["Resources"])
    template["Outputs"] = kept(template.get("Outputs", {}))
    for item in list(template["Resources"].values()) + list(template["Outputs"].values()):
        item.pop("Condition", None)
    template.pop("Conditions", None)
    template.pop("Rules", None)
    return template


def check(what, ok, detail=""):
    print(f"{'ok' if ok else 'FAILED'}: {what}{': ' + detail if detail else ''}")
    if not ok:
        check.failed = True


def main(endpoint, written):
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    session = dict(endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    client = lambda service: boto3.client(service, **session)
    suffix = str(os.getpid())
    client("s3").create_bucket(Bucket=f"dbroles-artifacts-{suffix}")
    template = resolve_conditions(translated(client("s3"), f"dbroles-artifacts-{suffix}"))

    cloudformation = client("cloudformation")
    stack = f"dbroles-{suffix}"
    cloudformation.create_stack(
        StackName=stack,
        TemplateBody=json.dumps(template, default=str),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in PARAMETERS.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    for _ in range(120):
        status = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
        if not status["StackStatus"].endswith("IN_PROGRESS"):
            break
        time.sleep(0.5)
    check("the stack creates", status["StackStatus"] == "CREATE_COMPLETE", status.get("StackStatusReason") or "")
    created = cloudformation.list_stack_resources(StackName=stack)["StackResourceSummaries"]
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in created}
    wanted = {name: r["Type"] for name, r in template["Resources"].items()}
    # moto's CloudFormation makes no HTTP API, gives Lambda permissions no physical id, and
    # has no CloudWatch alarms (cfn-lint checks them; the dashboard names them by ARN) and
    # no physical id for a topic policy.
    unsupported = ("AWS::ApiGatewayV2::", "AWS::Lambda::Permission", "AWS::CloudWatch::Alarm", "AWS::SNS::TopicPolicy")
    left_out = sorted({kind for name, kind in wanted.items() if not physical.get(name)})
    print("moto does not deploy (or name):", ", ".join(left_out) or "nothing")
    missing = [f"{n} ({k})" for n, k in wanted.items() if not physical.get(n) and not k.startswith(unsupported)]
    check("every other resource was created", not missing, ", ".join(missing))

    table = client("dynamodb").describe_table(TableName=physical["Table"])["Table"]
    check("the table has GSI1", [i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])] == ["GSI1"])
    functions = {f["FunctionName"] for f in client("lambda").list_functions()["Functions"]}
    names = [name for name, kind in wanted.items() if kind == "AWS::Lambda::Function"]
    check("the fourteen functions", len(names) == 14 and all(physical[n] in functions for n in names))
    iam = client("iam")
    roles = [name for name, kind in wanted.items() if kind == "AWS::IAM::Role"]
    bare = [r for r in roles if not iam.list_role_policies(RoleName=physical[r])["PolicyNames"]
            and not iam.list_attached_role_policies(RoleName=physical[r])["AttachedPolicies"]]
    check("every role has its policies", not bare, ", ".join(bare))
    rules = [name for name, kind in wanted.items() if kind == "AWS::Events::Rule"]
    check("the rules", len(rules) >= 3 and all(physical[r] for r in rules), ", ".join(rules))

    topic = client("sns").get_topic_attributes(TopicArn=physical["AlarmTopic"])["Attributes"]
    check("the alarm topic is encrypted with the stack's own key", topic.get("KmsMasterKeyId") == physical["AlarmTopicKey"],
          topic.get("KmsMasterKeyId", "no key"))
    board = client("cloudwatch").get_dashboard(DashboardName=physical["Dashboard"])["DashboardBody"]
    widgets = json.loads(board)["widgets"]
    alarms = [name for name, kind in wanted.items() if kind == "AWS::CloudWatch::Alarm"]
    shown = next(w for w in widgets if w["type"] == "alarm")["properties"]["alarms"]
    check("the dashboard shows every alarm", len(alarms) == 13 and len(shown) == len(alarms), f"{len(shown)} of {len(alarms)}")

    lambdas = client("lambda")
    machines = [name for name, kind in wanted.items() if kind == "AWS::StepFunctions::StateMachine"]
    check("the two state machines", sorted(machines) == ["FleetStateMachine", "ProvisionStateMachine"], str(machines))
    deployed = {}
    for machine in machines:
        properties = template["Resources"][machine]["Properties"]
        body = properties["DefinitionString"]["Fn::Join"]
        definition = body[0].join(body[1])
        substitutions = properties.get("DefinitionSubstitutions", {})
        placeholders = set(re.findall(r"\$\{(\w+)\}", definition))
        check(f"{machine}: the definition's placeholders are its substitutions", placeholders == set(substitutions),
              str(placeholders ^ set(substitutions)))
        text = client("stepfunctions").describe_state_machine(stateMachineArn=physical[machine])["definition"]
        print(f"moto applies {machine}'s DefinitionSubstitutions:", "yes" if "${" not in text else "no (they are applied here, as CloudFormation would)")
        # The values CloudFormation substitutes: each function's ARN, or the provisioning state machine's.
        for name, value in substitutions.items():
            if value == {"Ref": "ProvisionStateMachine"}:
                text = text.replace("${" + name + "}", physical["ProvisionStateMachine"])
                continue
            target = value.get("Fn::GetAtt", [None])[0] if isinstance(value, dict) else None
            check(f"{name} names a deployed function", target in names and physical.get(target) in functions, str(value))
            if physical.get(target) in functions:
                function = lambdas.get_function(FunctionName=physical[target])["Configuration"]
                text = text.replace("${" + name + "}", function["FunctionArn"])
                deployed.setdefault("functions", {})[function["FunctionName"]] = function.get("Environment", {}).get("Variables", {})
        deployed[machine] = text
    if written:
        # What tests/tests/deployed.rs runs on moto's Step Functions: the deployed
        # definitions, substituted, and each function's environment (its
        # DBROLES_STEP chooses the step it runs).
        rehearsal = {
            "definition": deployed["ProvisionStateMachine"],
            "fleet_definition": deployed["FleetStateMachine"],
            "table": physical["Table"],
            "functions": deployed["functions"],
        }
        with open(written, "w") as out:
            json.dump(rehearsal, out, indent=2)
        print("the deployed definitions and functions:", written)
    sys.exit(1 if getattr(check, "failed", False) else 0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
