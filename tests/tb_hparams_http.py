"""Asks a TensorBoard server what its HParams tab shows, through the HTTP
API its web page uses (`/data/plugin/hparams/experiment` and
`/session_groups`), and prints both answers as JSON.

usage: tb_hparams_http.py LOGDIR SESSIONS
Starts TensorBoard in-process on a free port over LOGDIR and waits until it
has loaded SESSIONS sessions (at most 120 s)."""

import json
import sys
import time
import urllib.request

from tensorboard import program


def post(url, body):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def main(logdir, sessions):
    tb = program.TensorBoard()
    tb.configure(argv=[None, "--logdir", logdir, "--port", "0", "--reload_interval", "1",
                       "--load_fast", "false"])
    base = tb.launch().rstrip("/") + "/data/plugin/hparams/"
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    deadline = time.time() + 120
    while True:
        experiment = post(base + "experiment", {"experimentName": ""})
        groups = post(base + "session_groups", {
            "experimentName": "",
            "allowedStatuses": statuses,
            "startIndex": 0,
            "sliceSize": 1000,
        })
        found = sum(len(g.get("sessions", [])) for g in groups.get("sessionGroups", []))
        if found >= sessions or time.time() > deadline:
            break
        time.sleep(0.5)
    json.dump({"experiment": experiment, "session_groups": groups}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
