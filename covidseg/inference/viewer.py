"""A case as one self-contained HTML page: the CT slices with the reference and the prediction as
toggleable overlays, a slider and the mouse wheel through the slices, and the Dice of the case
and of the shown slice.

The page loads nothing (no CDN, no font, no URL): its script and style are inline, each slice is
a base64 JPEG (greyscale, the volume's 1st-99.5th percentile window, as the overlay figures) and
each mask a run-length list drawn on a canvas.  It stays small: the slices are subsampled
in-plane to at most ``max_size`` pixels and at most ``max_slices`` evenly spaced slices are kept
(phantom volumes of 133×256² and 120×512², capped to 64 slices: 1.1 and 1.3 MB).  The Dice values
are computed here, on the full arrays given, and embedded per slice — the page only shows them:

    slice Dice = 2 |P_z ∩ R_z| / (|P_z| + |R_z|)   (none where both are empty)
    case Dice  = 2 |P ∩ R| / (|P| + |R|)            over all slices, shown or not

``#slice=N`` in the page's address opens slice z = N (the nearest kept one).  MLflow shows an
HTML artifact in a sandboxed frame (scripts allowed): the page uses no storage and no network.
"""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np


def dice(pred: np.ndarray, ref: np.ndarray) -> float | None:
    """2|P∩R| / (|P| + |R|); None when both are empty."""
    denom = int(pred.sum()) + int(ref.sum())
    return None if denom == 0 else 2.0 * int(np.logical_and(pred, ref).sum()) / denom


def run_lengths(mask: np.ndarray) -> list[int]:
    """Alternating run lengths of a flattened binary mask, starting with a run of zeros."""
    flat = np.asarray(mask, dtype=bool).ravel()
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


def kept_slices(depth: int, max_slices: int) -> list[int]:
    """At most ``max_slices`` evenly spaced slice indices (all of them when there are fewer)."""
    if depth <= max_slices:
        return list(range(depth))
    return sorted({int(round(z)) for z in np.linspace(0, depth - 1, max_slices)})


def _jpeg(plane: np.ndarray, quality: int) -> str:
    from PIL import Image  # matplotlib's own image library

    buf = io.BytesIO()
    Image.fromarray(plane, mode="L").save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def slice_viewer_html(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray | None = None,
                      title: str = "", caption: str = "", max_size: int = 256,
                      max_slices: int = 64, quality: int = 85) -> str:
    """The viewer page of one case: ``image`` (z, y, x) any intensity scale, ``prediction`` and
    ``truth`` (z, y, x) masks (``truth`` None: the prediction alone, no Dice); ``caption``: a line
    of text under the title (e.g. the original-grid score)."""
    image = np.asarray(image, dtype=np.float32)
    pred = np.asarray(prediction) > 0
    ref = None if truth is None else np.asarray(truth) > 0
    if image.ndim != 3 or pred.shape != image.shape or (ref is not None
                                                        and ref.shape != pred.shape):
        raise ValueError(f"image {image.shape}, prediction {pred.shape} and truth "
                         f"{None if ref is None else ref.shape} must be equal (z, y, x) shapes")
    step = max(1, int(np.ceil(max(image.shape[1:]) / max_size)))
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    slices = []
    for z in kept_slices(image.shape[0], max_slices):
        plane = np.nan_to_num(image[z, ::step, ::step], nan=lo)
        grey = np.clip((plane - lo) * scale, 0, 255).astype(np.uint8)
        entry = {"z": z, "img": _jpeg(grey, quality), "pred": run_lengths(pred[z, ::step, ::step]),
                 "pred_px": int(pred[z].sum())}
        if ref is not None:
            entry.update(ref=run_lengths(ref[z, ::step, ::step]), ref_px=int(ref[z].sum()),
                         dice=dice(pred[z], ref[z]))
        slices.append(entry)
    area = [s["pred_px"] + s.get("ref_px", 0) for s in slices]
    data = {"title": title, "caption": caption, "depth": int(image.shape[0]),
            "height": int(image[0, ::step, ::step].shape[0]),
            "width": int(image[0, ::step, ::step].shape[1]), "step": step,
            "truth": ref is not None, "case_dice": None if ref is None else dice(pred, ref),
            "start": int(np.argmax(area)) if any(area) else len(slices) // 2, "slices": slices}
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (PAGE.replace("__TITLE__", html.escape(title or "slice viewer"))
            .replace("__DATA__", payload))


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font:14px system-ui,sans-serif;margin:12px;background:#111;color:#eee}
#stack{position:relative;display:inline-block;cursor:ns-resize}
#stack canvas{width:min(512px,calc(100vh - 190px));height:auto;display:block}
#stack canvas#overlay{position:absolute;left:0;top:0;image-rendering:pixelated}
.row{margin:6px 0}.truth{color:#3f3}.pred{color:#f4f}.both{color:#ff3}label{margin-right:14px}
#slider{width:min(512px,calc(100vh - 190px))}small{color:#aaa}
</style></head><body>
<h3 id="title"></h3><div id="caption"><small></small></div>
<div class="row"><span id="case-dice"></span></div>
<div id="stack"><canvas id="ct"></canvas><canvas id="overlay"></canvas></div>
<div class="row"><input id="slider" type="range" min="0" step="1"></div>
<div class="row"><b id="slice-label"></b> &nbsp; <span id="slice-dice"></span></div>
<div class="row"><label id="ref-toggle" class="truth"><input id="show-ref" type="checkbox" checked>
truth (reference)</label><label class="pred"><input id="show-pred" type="checkbox" checked>
prediction</label><span id="both" class="both">both&nbsp;&nbsp;</span><label>opacity
<input id="alpha" type="range" min="0" max="100" value="45"></label></div>
<div class="row"><small>mouse wheel or slider: slices; #slice=N in the address opens
slice N</small></div>
<script id="viewer-data" type="application/json">__DATA__</script>
<script>
(function(){
"use strict";
var D=JSON.parse(document.getElementById("viewer-data").textContent);
var W=D.width,H=D.height,S=D.slices,cur=0;
var ct=document.getElementById("ct"),ov=document.getElementById("overlay"),
    slider=document.getElementById("slider");
[ct,ov].forEach(function(c){c.width=W;c.height=H;});
document.getElementById("title").textContent=D.title;
document.getElementById("caption").firstChild.textContent=D.caption;
function fmt(v){return v===null?"n/a (no lesion in truth or prediction)":v.toFixed(3);}
document.getElementById("case-dice").textContent=D.truth?
  "case Dice "+fmt(D.case_dice)+" (all "+D.depth+" slices)":"prediction only (no truth)";
if(!D.truth){["ref-toggle","both"].forEach(function(id){
  document.getElementById(id).style.display="none";});}
function decode(runs){var m=new Uint8Array(W*H),p=0,on=false;
  for(var i=0;i<runs.length;i++){if(on){m.fill(1,p,p+runs[i]);}p+=runs[i];on=!on;}return m;}
var COLOURS=[null,[255,0,255],[0,255,0],[255,255,0]];  // prediction, truth, both
function paint(){
  var s=S[cur],g=ov.getContext("2d"),im=g.createImageData(W,H),d=im.data;
  var sr=D.truth&&document.getElementById("show-ref").checked,
      sp=document.getElementById("show-pred").checked;
  if(!s.masks){s.masks=[decode(s.pred),D.truth?decode(s.ref):null];}
  var P=s.masks[0],R=s.masks[1];
  for(var k=0;k<W*H;k++){var c=(sp&&P[k]?1:0)+(sr&&R[k]?2:0);
    if(c){var o=4*k,rgb=COLOURS[c];d[o]=rgb[0];d[o+1]=rgb[1];d[o+2]=rgb[2];d[o+3]=255;}}
  g.putImageData(im,0,0);
  ov.style.opacity=document.getElementById("alpha").value/100;}
var imgs=S.map(function(s){var im=new Image();im.src="data:image/jpeg;base64,"+s.img;return im;});
function show(i){
  cur=Math.max(0,Math.min(S.length-1,i));var s=S[cur],im=imgs[cur];
  var draw=function(){ct.getContext("2d").drawImage(im,0,0,W,H);};
  if(im.complete){draw();}else{im.onload=function(){if(imgs[cur]===im){draw();}};}
  paint();
  slider.value=cur;
  document.getElementById("slice-label").textContent=
    "slice z = "+s.z+" / "+(D.depth-1)+" ("+(cur+1)+" of "+S.length+" shown)";
  document.getElementById("slice-dice").textContent=D.truth?
    "slice Dice "+fmt(s.dice)+" (truth "+s.ref_px+" px, prediction "+s.pred_px+" px)":
    "prediction "+s.pred_px+" px";}
function nearest(z){var b=0;for(var i=0;i<S.length;i++){
  if(Math.abs(S[i].z-z)<Math.abs(S[b].z-z)){b=i;}}return b;}
function fromHash(){var m=/slice=(\\d+)/.exec(location.hash||"");
  return m?nearest(parseInt(m[1],10)):null;}
slider.max=S.length-1;
slider.addEventListener("input",function(){show(parseInt(slider.value,10));});
document.getElementById("stack").addEventListener("wheel",function(e){
  e.preventDefault();show(cur+(e.deltaY>0?1:-1));},{passive:false});
document.addEventListener("keydown",function(e){
  if(e.key==="ArrowUp"||e.key==="ArrowRight"){show(cur+1);}
  if(e.key==="ArrowDown"||e.key==="ArrowLeft"){show(cur-1);}});
["show-ref","show-pred","alpha"].forEach(function(id){
  document.getElementById(id).addEventListener("input",paint);});
window.addEventListener("hashchange",function(){var i=fromHash();if(i!==null){show(i);}});
var h=fromHash();show(h===null?D.start:h);
})();
</script></body></html>
"""
