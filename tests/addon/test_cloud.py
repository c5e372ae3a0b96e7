"""The add-on's cloud farm buttons against moto_server (the EC2 API on loopback), through a
`blendfleet` built with `--features aws`: Start runs `blendfleet cloud up` (which starts the
manager's instance and then, as moto's console never shows a CA fingerprint, gives up and
says so), Status lists the instance, renders read the connection `up` saves, Stop terminates
everything. The cloud preferences and the panel are drawn into a recording layout that checks
every property, operator and icon they name.

    BLENDFLEET_CLOUD_BIN=…/blendfleet BLENDFLEET_MOTO_SERVER=…/moto_server \\
        blender -b --factory-startup --python-exit-code 1 --python tests/addon/test_cloud.py

scripts/test-cloud.sh runs it with HOME and XDG_CONFIG_HOME pointed at a temporary directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

harness.use_source_addon()

import bpy  # noqa: E402,I001 - first: pip bpy puts addon_utils on the path
import addon_utils  # noqa: E402

from blendfleet import cloud, connection, jobs  # noqa: E402
from blendfleet import prefs as prefs_module  # noqa: E402
from blendfleet.panels import STATE  # noqa: E402

FARM = "blenderfarm"


def start_moto() -> tuple[subprocess.Popen, str]:
    moto = os.environ["BLENDFLEET_MOTO_SERVER"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("moto_server did not start")


def an_ami(url: str) -> str:
    """An image moto knows, asked through boto3 in moto's own environment."""
    python = os.path.join(os.path.dirname(os.environ["BLENDFLEET_MOTO_SERVER"]), "python")
    script = ("import boto3,sys; c=boto3.client('ec2', region_name='us-east-1', endpoint_url=sys.argv[1]);"
              "print(c.describe_images()['Images'][0]['ImageId'])")
    return subprocess.check_output([python, "-c", script, url], text=True).strip()


def wait_idle(timeout: float = 120.0) -> None:
    """Runs the main-thread queue (no timers run in background mode) until the work is done."""
    deadline = time.monotonic() + timeout
    while STATE.busy:
        assert time.monotonic() < deadline, f"still busy: {STATE.busy}"
        jobs.pump()
        time.sleep(0.05)
    jobs.pump()


def test_start_status_connection_stop(tmp: str) -> None:
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_EC2_METADATA_DISABLED="true", BLENDFLEET_CLOUD_WAIT_MINUTES="0")
    os.environ.pop("BLENDFLEET_CLOUD_CONFIG", None)
    moto, url = start_moto()
    addon_utils.enable("blendfleet", default_set=True)
    try:
        config = os.path.join(tmp, "cloud.toml")
        with open(config, "w", encoding="utf-8") as file:
            file.write(f'provider = "aws"\nfarm = "{FARM}"\n[aws]\nregion = "us-east-1"\n'
                       f'zones = ["us-east-1a"]\nami = "{an_ami(url)}"\nendpoint_url = "{url}"\n')
        prefs = prefs_module.get()
        prefs.provider = "AWS"
        prefs.cloud_config = config
        prefs.binary = os.environ["BLENDFLEET_CLOUD_BIN"]
        settings = connection.Settings.from_prefs(prefs)
        binary = settings.binary
        assert binary, "the configured blendfleet is found"

        # Nothing started yet: a render says what to do.
        try:
            connection.cloud_connection(settings)
        except connection.SetupError as error:
            assert "blendfleet cloud up" in str(error) and "Start cloud farm" in str(error), str(error)
        else:
            raise AssertionError("a farm that was never started gave a connection")

        # Start: the manager's instance starts; its fingerprint never shows on moto.
        lines: list[str] = []
        try:
            cloud.up(binary, config, lines.append)
        except cloud.CloudError as error:
            assert "did not publish its CA fingerprint" in str(error), str(error)
        else:
            raise AssertionError("up succeeded without a fingerprint")
        assert any(f"started manager {FARM}-manager" in line for line in lines), lines

        # The button refuses a second manager, with the program's reason.
        assert bpy.ops.blendfleet.cloud_up() == {"FINISHED"}
        wait_idle()
        assert STATE.message.startswith("Cloud farm did not start"), STATE.message
        assert "already has a manager" in STATE.message, STATE.message

        assert bpy.ops.blendfleet.cloud_status() == {"FINISHED"}
        wait_idle()
        assert STATE.message == "Cloud farm: 1 manager, 0 agent instance(s)", STATE.message

        # What `up` saves once a manager published its fingerprint is what renders use.
        fingerprint = "sha256:" + "cd" * 32
        saved_connection = f"https://admin@198.51.100.4:8443/#ca={fingerprint}"
        saved = os.path.join(os.environ["XDG_CONFIG_HOME"], "blendfleet", "cloud", f"{FARM}.toml")
        os.makedirs(os.path.dirname(saved), exist_ok=True)
        with open(saved, "w", encoding="utf-8") as file:
            file.write(f'farm = "{FARM}"\nprovider = "aws"\ninstance_id = "i-1"\n'
                       f'instance_name = "{FARM}-manager"\nzone = "us-east-1a"\n'
                       f'url = "https://198.51.100.4:8443"\nuser = "admin"\npassword = "pw"\n'
                       f'ca_fingerprint = "{fingerprint}"\nconnection = "{saved_connection}"\n')
        found = connection.cloud_connection(settings)
        assert found["connection"] == saved_connection and found["password"] == "pw", found
        prefs.provider = "GCP"
        try:
            connection.cloud_connection(connection.Settings.from_prefs(prefs))
        except connection.SetupError as error:
            assert "runs on aws, but GCP is chosen" in str(error), str(error)
        else:
            raise AssertionError("an AWS farm was used as a GCP one")
        prefs.provider = "AWS"

        # Stop sweeps the instance and forgets the connection.
        assert bpy.ops.blendfleet.cloud_down("EXEC_DEFAULT") == {"FINISHED"}
        wait_idle(600)
        assert STATE.message == "Cloud farm stopped: 1 instance(s) terminated", STATE.message
        assert not os.path.exists(saved)
        assert cloud.status(binary, config)["instances"] == []
        assert bpy.ops.blendfleet.cloud_status() == {"FINISHED"}
        wait_idle()
        assert STATE.message == "Cloud farm: no instances running", STATE.message
    finally:
        addon_utils.disable("blendfleet", default_set=True)
        moto.kill()
        moto.wait()


ICONS = set(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())


class Layout:
    """Stands in for a UILayout outside a window: records what a draw function asks for and
    checks that every property, operator and icon it names exists."""

    def __init__(self, drawn: list) -> None:
        self.drawn = drawn

    def _sub(self, *_args, **_kwargs) -> "Layout":
        return Layout(self.drawn)

    box = row = column = split = _sub

    def _icon(self, icon: str) -> None:
        assert icon in ICONS, f"no icon {icon}"

    def label(self, text: str = "", icon: str = "NONE", **_kwargs) -> None:
        self._icon(icon)
        self.drawn.append(("label", text))

    def prop(self, data, name: str, icon: str = "NONE", **_kwargs) -> None:  # noqa: ANN001
        self._icon(icon)
        real = getattr(data, "_real", data)
        assert name in real.bl_rna.properties, f"no property {name}"
        self.drawn.append(("prop", name))

    def operator(self, idname: str, icon: str = "NONE", **_kwargs) -> object:
        self._icon(icon)
        group, name = idname.split(".")
        getattr(getattr(bpy.ops, group), name).get_rna_type()  # raises when not registered
        self.drawn.append(("operator", idname))
        return type("Properties", (), {})()


class WithLayout:
    """A registered object seen from its draw function, with a recording layout."""

    def __init__(self, real, drawn: list) -> None:  # noqa: ANN001
        self._real = real
        self.layout = Layout(drawn)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._real, name)


def test_cloud_settings_and_panel_draw(_tmp: str) -> None:
    from blendfleet import engine, panels

    addon_utils.enable("blendfleet", default_set=True)
    try:
        prefs = prefs_module.get()
        prefs.provider = "AWS"
        drawn: list = []
        prefs_module.BlendFleetPreferences.draw(WithLayout(prefs, drawn), bpy.context)
        for item in [("prop", "cloud_config"), ("operator", "blendfleet.cloud_up"),
                     ("operator", "blendfleet.cloud_status"), ("operator", "blendfleet.cloud_down"),
                     ("prop", "binary")]:
            assert item in drawn, (item, drawn)
        assert ("prop", "password") not in drawn, "a cloud farm's password is not typed in"

        bpy.context.scene.render.engine = engine.ENGINE_ID
        bpy.context.scene.blendfleet.job_id = 7
        STATE.saved_job = {"id": 7, "state": "running",
                           "spend": {"cost_micro_usd": 300_000, "budget_micro_usd": 1_000_000}}
        drawn = []
        panel = WithLayout(None, drawn)
        panel._real = panels.BLENDFLEET_PT_farm
        panels.BLENDFLEET_PT_farm.draw(panel, bpy.context)
        for item in [("operator", "blendfleet.cloud_up"), ("operator", "blendfleet.cloud_down"),
                     ("label", "cloud cost so far $0.30 of a $1.00 budget")]:
            assert item in drawn, (item, drawn)
    finally:
        STATE.saved_job = None
        addon_utils.disable("blendfleet", default_set=True)


def test_program_errors_come_through(tmp: str) -> None:
    missing = os.path.join(tmp, "nowhere.toml")
    binary = os.environ["BLENDFLEET_CLOUD_BIN"]
    try:
        cloud.status(binary, missing)
    except cloud.CloudError as error:
        assert "nowhere.toml" in str(error), str(error)
    else:
        raise AssertionError("status without a config succeeded")
    assert cloud.error_message(["INFO something", "error: first", "  caused by: second"]) == "first caused by: second"
    assert cloud.summary({"instances": [{"role": "manager"}, {"role": "agent"}],
                          "farm": {"total_cost_micro_usd": 1_250_000}}) == (
        "1 manager, 1 agent instance(s); spend so far $1.25")
    assert cloud.job_spend({"state": "running"}) == ""
    assert cloud.job_spend({"spend": {"cost_micro_usd": 420_000, "agent_seconds": 60}}) == (
        "cloud cost so far $0.42")
    assert cloud.job_spend({"spend": {"cost_micro_usd": 2_000_000, "budget_micro_usd": 2_000_000,
                                      "budget_reached": True}}) == (
        "cloud cost so far $2.00 of a $2.00 budget (reached: no more agents for this job)")
    try:
        cloud.run(os.path.join(tmp, "no-such-binary"), "status", "")
    except cloud.CloudError as error:
        assert "could not run" in str(error), str(error)
    else:
        raise AssertionError("a missing program ran")


if __name__ == "__main__":
    harness.run([test_start_status_connection_stop, test_cloud_settings_and_panel_draw,
                 test_program_errors_come_through], "cloud add-on")
