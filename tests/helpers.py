"""Test helpers that write real files: DICOM series, 2D slices, fake public dataset layouts, a
Models Genesis checkpoint."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from torch import nn

PATIENT_NAME = "Doe^Jane"  # must never appear in anything covidseg writes or logs
PATIENT_ID = "PID-7731"
# every identifying value write_dicom_series puts in a slice (tag: value), recognisable in bytes
IDENTIFYING = {"0010|0010": PATIENT_NAME, "0010|0020": PATIENT_ID, "0010|0030": "19470223",
               "0008|0050": "ACC-55017", "0020|0010": "STUDY-4411",
               "0008|0080": "St Elsewhere Hospital", "0008|0090": "Kildare^James",
               "0008|1010": "CT-STATION-9", "0018|1000": "SN-661337"}


def write_dicom_series(volume: sitk.Image, folder: Path, with_spacing: bool = True,
                       frame_of_reference: bool = True) -> Path:
    """Write a 3D image as a CT DICOM series (one file per slice) with identifying tags
    (:data:`IDENTIFYING`) and, unless told not to, a Frame of Reference UID."""
    folder.mkdir(parents=True, exist_ok=True)
    vol = sitk.Cast(volume, sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    date, tm = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    direction = vol.GetDirection()
    series_uid = "1.2.826.0.1.3680043.2.1125." + date + ".1" + tm
    common = [
        *IDENTIFYING.items(), ("0008|0060", "CT"),
        ("0008|0020", date), ("0008|0030", tm), ("0020|000d", series_uid + ".0"),
        ("0020|000e", series_uid), ("0008|103e", "covidseg test series"),
        ("0020|0037", "\\".join(map(str, (direction[0], direction[3], direction[6],
                                          direction[1], direction[4], direction[7])))),
        ("0028|1050", "-600"), ("0028|1051", "1500"),
        ("0028|1052", "0"), ("0028|1053", "1"), ("0028|1054", "HU"),
        ("0018|0050", str(vol.GetSpacing()[2])),
    ] + ([("0020|0052", series_uid + ".9999")] if frame_of_reference else [])
    for i in range(vol.GetDepth()):
        sl = vol[:, :, i]
        for k, v in common:
            sl.SetMetaData(k, v)
        sl.SetMetaData("0028|0030", f"{vol.GetSpacing()[1]}\\{vol.GetSpacing()[0]}")
        origin = vol.TransformIndexToPhysicalPoint((0, 0, i))
        sl.SetMetaData("0020|0032", "\\".join(map(str, origin)))
        sl.SetMetaData("0020|0013", str(i + 1))
        sl.SetMetaData("0008|0018", series_uid + f".{i + 1}")
        path = folder / f"slice_{i:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(sl)
        if not with_spacing:  # GDCM always writes (0028,0030): turn it into (0028,0031)
            raw = path.read_bytes()  # implicit VR little endian: tag, 4-byte length, value
            header_end = raw.find(b"\xe0\x7f\x10\x00")  # pixel data starts here
            at = raw.find(b"\x28\x00\x30\x00", 0, header_end)
            assert at > 0
            path.write_bytes(raw[:at] + b"\x28\x00\x31\x00" + raw[at + 4:])
    return folder


def write_png_slice(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.clip(array, 0, 255).astype(np.uint8)), str(path))
    return path


def fake_covid19_ct_seg(root: Path, cases) -> Path:
    """COVID-19-CT-Seg: COVID-19-CT-Seg_20cases/, Infection_Mask/, Lung_Mask/ (same names)."""
    names = ["coronacases_001.nii.gz", "radiopaedia_4_85506_1.nii.gz"]
    for c, name in zip(cases, names):
        for src, d in (("image", "COVID-19-CT-Seg_20cases"), ("infection", "Infection_Mask"),
                       ("lung", "Lung_Mask")):
            (root / d).mkdir(parents=True, exist_ok=True)
            shutil.copy(c[src], root / d / name)
    return root


def fake_mosmed(root: Path, cases) -> Path:
    """MosMedData: studies/CT-0..CT-4/study_NNNN.nii.gz, masks/study_NNNN_mask.nii.gz."""
    (root / "masks").mkdir(parents=True, exist_ok=True)
    layout = [("CT-1", "study_0255", True), ("CT-1", "study_0256", False),
              ("CT-0", "study_0001", False)]
    for c, (grade, sid, masked) in zip(cases, layout):
        (root / "studies" / grade).mkdir(parents=True, exist_ok=True)
        shutil.copy(c["image"], root / "studies" / grade / f"{sid}.nii.gz")
        if masked:
            shutil.copy(c["infection"], root / "masks" / f"{sid}_mask.nii.gz")
    return root


def fake_msd_lung(root: Path, cases) -> Path:
    """MSD Task06_Lung: dataset.json, imagesTr/labelsTr, imagesTs (and macOS ._ junk)."""
    for d in ("imagesTr", "labelsTr", "imagesTs"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(cases[0]["image"], root / "imagesTr" / "lung_001.nii.gz")
    shutil.copy(cases[0]["infection"], root / "labelsTr" / "lung_001.nii.gz")
    shutil.copy(cases[1]["image"], root / "imagesTr" / "lung_003.nii.gz")
    shutil.copy(cases[1]["infection"], root / "labelsTr" / "lung_003.nii.gz")
    shutil.copy(cases[2]["image"], root / "imagesTs" / "lung_002.nii.gz")
    (root / "imagesTr" / "._lung_001.nii.gz").write_bytes(b"\x00junk")
    meta = {"name": "Lung", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "cancer"},
            "numTraining": 2, "numTest": 1,
            "training": [{"image": f"./imagesTr/lung_{i}.nii.gz",
                          "label": f"./labelsTr/lung_{i}.nii.gz"} for i in ("001", "003")],
            "test": ["./imagesTs/lung_002.nii.gz"]}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def fake_nnunet(root: Path, cases, labels=None, splits=None, channels=None,
                file_ending=".nii.gz") -> Path:
    """An nnU-Net v2 raw dataset: dataset.json, imagesTr/<case>_0000 with labelsTr/<case> (one
    label map: 1 lung, 2 infection), imagesTs/ (case_2 with labelsTs/, case_3 without)."""
    def label_map(c):
        inf, lung = (sitk.ReadImage(str(c[k])) for k in ("infection", "lung"))
        arr = np.where(sitk.GetArrayFromImage(inf) > 0, 2,
                       np.where(sitk.GetArrayFromImage(lung) > 0, 1, 0)).astype(np.uint8)
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(inf)
        return out

    for i, c in enumerate(cases[:4]):
        part = "Tr" if i < 2 else "Ts"
        (root / f"images{part}").mkdir(parents=True, exist_ok=True)
        shutil.copy(c["image"], root / f"images{part}" / f"case_{i}_0000{file_ending}")
        if i < 3:
            (root / f"labels{part}").mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(label_map(c), str(root / f"labels{part}" / f"case_{i}{file_ending}"))
    meta = {"channel_names": channels or {"0": "CT"},
            "labels": labels or {"background": 0, "lung": 1, "infection": 2},
            "numTraining": 2, "file_ending": file_ending, "name": "Phantoms"}
    (root / "dataset.json").write_text(json.dumps(meta))
    if splits is not None:
        (root / "splits_final.json").write_text(json.dumps(splits))
    return root


def fake_nsclc(root: Path, cases) -> Path:
    """NSCLC effusion / lung masks: images/LUNG1-NNN.nii.gz, masks/LUNG1-NNN_effusion|lung."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(cases[:2]):
        sid = f"LUNG1-{i + 1:03d}"
        shutil.copy(c["image"], root / "images" / f"{sid}.nii.gz")
        shutil.copy(c["infection"], root / "masks" / f"{sid}_effusion_first_reviewer.nii.gz")
        shutil.copy(c["lung"], root / "masks" / f"{sid}_lung.nii.gz")
    return root


# --- the Models Genesis UNet3D layout (Zhou et al.), written out for the tests ----------------
class ContBatchNorm3d(nn.BatchNorm3d):
    def forward(self, x):  # the released model always normalises with batch statistics
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            True, self.momentum, self.eps)


class LUConv3d(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, kernel_size=3, padding=1)
        self.bn1 = ContBatchNorm3d(cout)


def n_conv(cin, depth, double=False):
    w = 32 * 2 ** (depth + 1) if double else 32 * 2 ** depth
    return nn.Sequential(LUConv3d(cin, w), LUConv3d(w, w if double else 2 * w))


class Down3d(nn.Module):
    def __init__(self, cin, depth):
        super().__init__()
        self.ops = n_conv(cin, depth)
        self.maxpool = nn.MaxPool3d(2)


class Up3d(nn.Module):
    def __init__(self, cin, cout, depth):
        super().__init__()
        self.up_conv = nn.ConvTranspose3d(cin, cout, kernel_size=2, stride=2)
        self.ops = n_conv(cin + cout // 2, depth, double=True)


class Out3d(nn.Module):
    def __init__(self, cin, n):
        super().__init__()
        self.final_conv = nn.Conv3d(cin, n, kernel_size=1)
        self.sigmoid = nn.Sigmoid()


class UNet3DGenesis(nn.Module):
    def __init__(self):
        super().__init__()
        self.down_tr64, self.down_tr128 = Down3d(1, 0), Down3d(64, 1)
        self.down_tr256, self.down_tr512 = Down3d(128, 2), Down3d(256, 3)
        self.up_tr256, self.up_tr128 = Up3d(512, 512, 2), Up3d(256, 256, 1)
        self.up_tr64 = Up3d(128, 128, 0)
        self.out_tr = Out3d(64, 1)


def write_genesis_checkpoint(path):
    """A checkpoint in the released ``Genesis_Chest_CT.pt`` layout; returns (path, state)."""
    torch.manual_seed(0)
    net = UNet3DGenesis()
    for m in net.modules():  # non-trivial statistics, so that skipping them is visible
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    state = {"module." + k: v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 42}, path)
    return path, state


# --- headless Chromium (Debian's `chromium`) against the MLflow UI ---------------------------
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=15000", "--window-size=1400,900"]


def chromium(url: str, workdir: Path, screenshot: Path | None = None) -> str:
    """The DOM of ``url`` after its scripts ran (and a screenshot when asked)."""
    import os
    import subprocess

    home = workdir / "chrome-home"
    home.mkdir(parents=True, exist_ok=True)
    base = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={workdir / 'chrome-profile'}"]
    env = {**os.environ, "HOME": str(home)}
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, encoding="utf-8",
                         errors="replace", env=env, timeout=120).stdout
    if screenshot is not None:
        subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, env=env,
                       timeout=120)
    return dom


class DevTools:
    """Headless Chromium driven over the DevTools protocol through ``--remote-debugging-pipe``
    (file descriptors 3 and 4: no port, no websocket library): open a page, run script in it or
    in one of its frames (a sandboxed frame is a target of its own), send mouse-wheel events and
    take screenshots.  A context manager: the browser is closed (killed if it hangs) on exit."""

    def __init__(self, workdir: Path, width: int = 1400, height: int = 900):
        import fcntl
        import os
        import subprocess

        (workdir / "chrome-home").mkdir(parents=True, exist_ok=True)

        def above_4(fd: int) -> int:  # so that moving the ends to 3 and 4 clobbers none
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            return moved

        to_browser, from_browser = ([above_4(fd) for fd in os.pipe()] for _ in range(2))

        def pipes_as_3_and_4():  # in the child, before exec
            os.dup2(to_browser[0], 3)
            os.dup2(from_browser[1], 4)

        flags = [f for f in CHROMIUM_FLAGS if not f.startswith(("--virtual-time", "--window"))]
        self.proc = subprocess.Popen(
            ["chromium", *flags, f"--window-size={width},{height}", "--remote-debugging-pipe",
             f"--user-data-dir={workdir / 'chrome-devtools-profile'}", "about:blank"],
            close_fds=False, preexec_fn=pipes_as_3_and_4, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env={**os.environ, "HOME": str(workdir / "chrome-home")})
        os.close(to_browser[0])
        os.close(from_browser[1])
        self._out, self._in, self._buf, self._id = to_browser[1], from_browser[0], b"", 0
        self.size = (width, height)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        import os
        import subprocess

        try:
            self.call("Browser.close")
            self.proc.wait(timeout=20)
        except (OSError, RuntimeError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        os.close(self._out)
        os.close(self._in)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """One command; its result (events read meanwhile are dropped)."""
        import os

        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited during {method}")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> str:
        """A new tab on ``url``; its session."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        width, height = self.size
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": 1,
                                                         "mobile": False}, session)
        self.call("Page.navigate", {"url": url}, session)
        return session

    def evaluate(self, expression: str, session: str):
        return self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                         session)["result"].get("value")

    def wait_for(self, expression: str, session: str, timeout: float = 60.0):
        """The first truthy value of ``expression`` (polled every 0.5 s)."""
        end = time.time() + timeout
        while time.time() < end:
            value = self.evaluate(expression, session)
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"{expression!r} stayed falsy for {timeout} s")

    def frame(self, url_prefix: str, timeout: float = 30.0) -> str:
        """The session of the (out-of-process) frame whose address starts with ``url_prefix``."""
        end = time.time() + timeout
        while time.time() < end:
            for t in self.call("Target.getTargets")["targetInfos"]:
                if t["type"] == "iframe" and t["url"].startswith(url_prefix):
                    return self.call("Target.attachToTarget", {"targetId": t["targetId"],
                                                               "flatten": True})["sessionId"]
            time.sleep(0.5)
        raise TimeoutError(f"no frame at {url_prefix}")

    def wheel(self, session: str, x: float, y: float, delta_y: float = 100.0) -> None:
        """One mouse-wheel notch at (x, y) of the page (downwards for delta_y > 0)."""
        self.call("Input.dispatchMouseEvent", {"type": "mouseWheel", "x": x, "y": y,
                                               "deltaX": 0, "deltaY": delta_y}, session)

    def screenshot(self, session: str, path: Path) -> Path:
        import base64

        data = self.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
        path.write_bytes(base64.b64decode(data))
        return path


class LoginProxy:
    """A logged-in browser session for headless Chromium, which cannot answer a basic-auth
    prompt (and refuses ``fetch`` from a page opened as ``http://user:pw@host``): a loopback
    proxy that adds the user's ``Authorization`` header to every request it forwards."""

    def __init__(self, target: str, username: str, password: str):
        import base64
        import http.server
        import socketserver
        import threading
        import urllib.error
        import urllib.request

        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        target = target.rstrip("/")

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "accept-encoding")}
                headers["Authorization"] = f"Basic {token}"
                req = urllib.request.Request(target + self.path, data=body, headers=headers,
                                             method=self.command)
                try:
                    resp = urllib.request.urlopen(req, timeout=60)
                except urllib.error.HTTPError as err:
                    resp = err
                data = resp.read()
                self.send_response(resp.status if hasattr(resp, "status") else resp.code)
                for k, v in resp.headers.items():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

            def log_message(self, *args):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
