# JupyterHub for a demo class of the course, started by `make hub` (labutils hub start), which writes
# HUB_DIR/hub.json and points PEFT_HUB_DIR at it. One machine, one Unix account for everyone:
# - SharedPasswordAuthenticator: the class list logs in with one shared password;
# - SimpleLocalProcessSpawner: each student's JupyterLab runs as this account, in HUB_DIR/homes/<name>;
# - nbgrader's exchange in HUB_DIR/exchange: Assignments tab -> fetch, submit, fetch feedback.
# A real class differs in each of these three (grader/README.md, "A class on JupyterHub").
import json
import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821

hub = Path(os.environ["PEFT_HUB_DIR"]).resolve()
settings = json.loads((hub / "hub.json").read_text())
bin_dir = Path(sys.executable).parent

c.JupyterHub.bind_url = f"http://{settings['ip']}:{settings['port']}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{settings['hub_port']}"
c.JupyterHub.db_url = f"sqlite:///{hub / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(hub / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(hub / "jupyterhub.pid")

c.ConfigurableHTTPProxy.command = [settings["proxy"]]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings['proxy_api_port']}"
c.ConfigurableHTTPProxy.pid_file = str(hub / "proxy.pid")

c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = settings["password"]
c.Authenticator.allowed_users = set(settings["students"])

c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(hub / "homes" / "{username}")
c.Spawner.cmd = [str(bin_dir / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
if os.getuid() == 0:
    c.Spawner.args = ["--allow-root"]  # a container's root, as CI's: JupyterLab refuses root without it
c.Spawner.environment = {
    # the students' nbgrader settings (exchange, course, their id) and their JupyterLab without the
    # instructor's formgrader: HUB_DIR/student-config, written by labutils hub start
    "JUPYTER_CONFIG_PATH": str(hub / "student-config"),
    # one copy of the tiny models for the class, built when the hub starts
    "PEFT_COURSE_CACHE": str(hub / "models"),
    "PEFT_COURSE_PROFILE": settings["profile"],
}
c.Spawner.start_timeout = 120  # a loaded 2-core machine can take a minute to start JupyterLab
c.Spawner.http_timeout = 120


def _first_login(spawner):
    """A home with JupyterLab's news toast off: the class machine may be offline (it asks, then fetches)."""
    home = Path(spawner.home_dir)
    news = home / ".jupyter/lab/user-settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
    if not news.exists():
        news.parent.mkdir(parents=True, exist_ok=True)
        news.write_text(json.dumps({"fetchNews": "false"}))


c.Spawner.pre_spawn_hook = _first_login
