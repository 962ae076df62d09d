# JupyterHub for a class of the course, started by `make hub` (labutils hub start), which writes
# HUB_DIR/hub.json and points PEFT_HUB_DIR at it.
# A class (root; the default):
# - PAMAuthenticator: each student logs in with their own Unix account and the password the instructor
#   issued (labutils hub add / password); only the students' group may log in; or, with --lti, launches
#   from the LMS signed with LTI 1.3 (peft_grader.hub_lti), for the same accounts only;
# - ClassSpawner (peft_grader.hub_spawner): each student's JupyterLab runs as their account, in their home
#   (HUB_DIR/homes/<name>, 0700), inside a memory cgroup of their own.
# The --demo hub: one shared password (SharedPasswordAuthenticator) and this one account for everyone
# (SimpleLocalProcessSpawner): no isolation at all.
# Both: nbgrader's exchange in HUB_DIR/exchange (Assignments tab: fetch, submit, fetch feedback).
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

if settings.get("class"):
    from peft_grader.hub_accounts import STUDENTS_GROUP

    if settings.get("lti"):  # launched from the LMS, for this class's accounts only
        from peft_grader.hub_lti import configure

        configure(c, settings["lti"])
    else:
        c.JupyterHub.authenticator_class = "pam"
        c.PAMAuthenticator.allowed_groups = {STUDENTS_GROUP}  # a student added later can log in at once
    c.Authenticator.blocked_users = {"root"}
    c.JupyterHub.spawner_class = "peft_grader.hub_spawner.ClassSpawner"
    c.Spawner.mem_limit = settings["memory_limit"]
else:
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = settings["password"]
    c.Authenticator.allowed_users = set(settings["students"])
    c.JupyterHub.spawner_class = "simple"
    c.SimpleLocalProcessSpawner.home_dir_template = str(hub / "homes" / "{username}")
    if os.getuid() == 0:
        c.Spawner.args = ["--allow-root"]  # a container's root, as CI's: JupyterLab refuses root without it
c.Spawner.cmd = [str(bin_dir / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.environment = {
    # the students' nbgrader settings (exchange, course, their id) and their JupyterLab without the
    # instructor's formgrader: HUB_DIR/student-config, written by labutils hub start
    "JUPYTER_CONFIG_PATH": str(hub / "student-config"),
    # one copy of the tiny models for the class, built when the hub starts
    "PEFT_COURSE_CACHE": str(hub / "models"),
    "PEFT_COURSE_PROFILE": settings["profile"],
}
if settings.get("class"):
    from peft_grader.hub_accounts import RUNTIME_ROOT

    # kernel sockets in a short folder of the student's own (labutils hub makes it: /run/peft-hub/<name>)
    c.Spawner.environment["JUPYTER_RUNTIME_DIR"] = lambda spawner: str(RUNTIME_ROOT / spawner.user.name)
    c.Spawner.environment["PYTHONPATH"] = str(hub / "student-config" / "python")  # debugpy stubbed out
c.Spawner.start_timeout = 120  # a loaded 2-core machine can take a minute to start JupyterLab
c.Spawner.http_timeout = 120
