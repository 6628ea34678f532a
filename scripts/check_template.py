"""Checks what cfn-lint and `sam validate` cannot: that template.yaml matches the code.

- each state machine's DefinitionSubstitutions name exactly the ${...} of its definition;
- every function builds a binary of the workspace, from its own package;
- every step function runs the step its substitution names (`DBROLES_STEP`);
- the HTTP API routes are exactly the route keys of the sample events in events/api/;
- every step function of the definition has a sample event folder.
Run by scripts/test with the virtualenv's Python (cfn-lint parses the template).
"""

import json
import pathlib
import re
import sys
import tomllib

from cfnlint.decode import decode

root = pathlib.Path(__file__).resolve().parent.parent
template, problems = decode(str(root / "template.yaml"))
if problems:
    sys.exit(f"template.yaml does not parse: {problems}")
resources = template["Resources"]
failures = []


def check(ok, message):
    if not ok:
        failures.append(message)


machines = {"ProvisionStateMachine": "provision.asl.json", "FleetStateMachine": "fleet.asl.json"}
for name, file in machines.items():
    definition = (root / "statemachine" / file).read_text()
    used = set(re.findall(r"\$\{(\w+)\}", definition))
    substituted = set(resources[name]["Properties"]["DefinitionSubstitutions"])
    check(used == substituted, f"{name}: DefinitionSubstitutions {sorted(substituted)} != the definition's {sorted(used)}")

functions = {name: r for name, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
for name, function in functions.items():
    code_uri = function["Properties"]["CodeUri"]
    binary = function["Metadata"]["BuildProperties"]["Binary"]
    check(function["Metadata"]["BuildMethod"] == "rust-cargolambda", f"{name}: BuildMethod is not rust-cargolambda")
    manifest = root / code_uri / "Cargo.toml"
    if not manifest.exists():
        failures.append(f"{name}: CodeUri {code_uri} has no Cargo.toml")
        continue
    package = tomllib.loads(manifest.read_text())["package"]["name"]
    check(package == binary, f"{name}: Binary {binary} is not the package {package} of {code_uri}")
    check((root / code_uri / "src/main.rs").exists(), f"{name}: {code_uri} has no src/main.rs")

# Each Task's function is a function of the template, under the name the substitution says;
# the fleet's Map names the provisioning state machine.
substitutions = 0
for machine in machines:
    for substitution, value in resources[machine]["Properties"]["DefinitionSubstitutions"].items():
        substitutions += 1
        if value == {"Ref": "ProvisionStateMachine"}:
            check(substitution == "ProvisionStateMachineArn", f"{substitution} names the provisioning state machine")
            continue
        target = value.get("Fn::GetAtt", [None])[0]
        check(target in functions, f"{substitution} names {target}, which is not a function of the template")
        step = substitution.removesuffix("FunctionArn")
        folder = re.sub(r"(?<!^)([A-Z])", r"-\1", step).lower()
        check((root / "events" / folder).is_dir(), f"{substitution}: no sample events in events/{folder}/")
        variables = functions.get(target, {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
        check(variables.get("DBROLES_STEP") == folder, f"{target}: DBROLES_STEP is {variables.get('DBROLES_STEP')}, not {folder}")

routes = set()
for function in functions.values():
    for event in function["Properties"].get("Events", {}).values():
        if event["Type"] == "HttpApi":
            routes.add(f'{event["Properties"]["Method"]} {event["Properties"]["Path"]}')
samples = {json.loads(p.read_text())["routeKey"] for p in (root / "events/api").glob("*.json")}
check(routes == samples, f"HTTP API routes {sorted(routes)} != the sample events' {sorted(samples)}")

if failures:
    sys.exit("template.yaml:\n  " + "\n  ".join(failures))
print(f"template.yaml: {len(functions)} functions, {len(routes)} routes, {substitutions} substitutions match the code")
