"use strict";
// The query page: drop or pick images; each is POSTed to /v1/query, its candidates shown with
// thumbnails, calibrated scores, verdicts and how each was decided; the matched regions are
// drawn on both images; the best match's edits come from /v1/localize as a numbered overlay.

const THRESHOLD = 0.5;
let counter = 0;

function decidedBy(match) {
  if (match.verified === true) {
    return match.score >= THRESHOLD
      ? `verified by keypoints: ${match.inliers} inliers of ${match.matches} matches`
      : `keypoints match (${match.inliers} inliers) but the fit and the pixels say not a copy (e.g. another photo of the same scene)`;
  }
  if (match.verified === false) return "keypoint check found no geometry: global score only";
  if (match.verified === "unavailable") return `reference unreadable (${match.verify_error || "?"}): global score only`;
  const d = match.decided_by_global_score;
  if (d === "accept") return "decided by the global score: clearly a copy (no keypoint check needed)";
  if (d === "reject") return "decided by the global score: clearly not a copy";
  return "global score only (keypoint check off)";
}

function boxLayer(width, height, boxes) {
  // An SVG over an image, in the image's own pixel coordinates.
  const layer = svg("svg", {class: "boxes", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none",
                            "aria-hidden": "true"});
  for (const b of boxes) {
    layer.append(svg("rect", {x: b.box[0], y: b.box[1], width: b.box[2] - b.box[0], height: b.box[3] - b.box[1],
                              class: b.cls || "", "vector-effect": "non-scaling-stroke"}));
  }
  return layer;
}

function jsonLink(object, name, label) {
  const url = URL.createObjectURL(new Blob([JSON.stringify(object, null, 2)], {type: "application/json"}));
  return el("a", {class: "json", href: url, download: name}, label);
}

function safeName(name) {
  return name.replace(/[^A-Za-z0-9._-]+/g, "_").replace(/\.[A-Za-z0-9]+$/, "");
}

class QueryCard {
  constructor(file) {
    this.file = file;
    this.n = ++counter;
    this.url = URL.createObjectURL(file);
    this.status = el("p", {class: "status", role: "status", text: "searching…"});
    this.downloads = el("p", {class: "downloads"});
    this.queryImg = el("img", {src: this.url, alt: `query: ${file.name}`, class: "query-img"});
    this.queryFrame = el("div", {class: "frame"}, this.queryImg);
    this.gallery = el("ol", {class: "gallery", "aria-label": "candidate originals, best first"});
    this.edits = el("div", {class: "edits"});
    this.root = el("article", {class: "query card", id: `q${this.n}`, "data-state": "searching",
                               "aria-labelledby": `q${this.n}-title`},
      el("header", {}, el("h2", {id: `q${this.n}-title`}, file.name), this.status, this.downloads),
      el("div", {class: "split"},
        el("figure", {class: "query-fig"}, this.queryFrame, el("figcaption", {text: "the query (your image)"})),
        el("div", {class: "candidates"}, el("h3", {text: "Candidate originals"}), this.gallery)),
      this.edits);
  }

  async run(k, verify) {
    const params = new URLSearchParams({k, verify, query_id: this.file.name});
    let result;
    try {
      result = await apiJson(`/v1/query?${params}`, {method: "POST", body: this.file,
        headers: {"Content-Type": this.file.type || "application/octet-stream"}});
    } catch (error) {
      this.fail(error);
      return;
    }
    this.result = result;
    this.downloads.replaceChildren(jsonLink(result, `${safeName(this.file.name)}.copytrace.json`, "Download the result (JSON)"));
    await this.imageLoaded();
    this.showMatches(result.matches);
    const best = result.matches[0];
    if (!best) {
      this.setState("none", "No candidates: the index is empty.");
    } else if (best.score >= THRESHOLD) {
      this.setState("copy", `A copy of ${best.reference_id} (score ${fmt(best.score)} ≥ ${THRESHOLD}).`);
      await this.localize(best);
    } else {
      this.setState("no-copy", `No copy found: the best candidate, ${best.reference_id}, scores ${fmt(best.score)} < ${THRESHOLD}.`);
      this.edits.replaceChildren(el("p", {class: "muted", text: "No match at or above the threshold, so there are no edits to show."}));
    }
    this.root.dataset.state = "done";
  }

  imageLoaded() {
    if (this.queryImg.complete && this.queryImg.naturalWidth) return Promise.resolve();
    return new Promise((resolve) => {
      this.queryImg.addEventListener("load", resolve, {once: true});
      this.queryImg.addEventListener("error", resolve, {once: true});
    });
  }

  setState(kind, text) {
    this.root.dataset.verdict = kind;
    this.status.textContent = text;
  }

  fail(error) {
    this.root.dataset.state = "error";
    this.root.dataset.verdict = "error";
    this.status.replaceChildren(el("span", {class: "error"}, "Failed: ", signInHint(error)));
  }

  select(index) {
    const match = this.result.matches[index];
    this.gallery.querySelectorAll(".match").forEach((card, i) => card.setAttribute("aria-pressed", String(i === index)));
    this.queryFrame.querySelector(".boxes")?.remove();
    if (match && match.query_box && this.queryImg.naturalWidth) {
      this.queryFrame.append(boxLayer(this.queryImg.naturalWidth, this.queryImg.naturalHeight,
                                      [{box: match.query_box, cls: match.score >= THRESHOLD ? "copy" : "other"}]));
    }
  }

  showMatches(matches) {
    this.gallery.replaceChildren(...matches.map((m, i) => this.matchCard(m, i)));
    const first = matches.findIndex((m) => m.query_box);
    this.select(first >= 0 ? first : 0);
  }

  matchCard(m, i) {
    const copy = m.score >= THRESHOLD;
    const idPath = m.reference_id.split("/").map(encodeURIComponent).join("/");
    const thumb = el("img", {src: `/v1/images/${idPath}/thumb?size=320`, alt: `catalog image ${m.reference_id}`,
                             class: "thumb", loading: "eager"});
    const frame = el("div", {class: "frame"}, thumb);
    if (m.reference_box) {
      apiJson(`/v1/images/${idPath}`).then((info) => {
        frame.append(boxLayer(info.width, info.height, [{box: m.reference_box, cls: copy ? "copy" : "other"}]));
      }).catch(() => {});
    }
    const card = el("button", {type: "button", class: `match ${copy ? "is-copy" : "not-copy"}`, "aria-pressed": "false",
                               title: "show this candidate's matched region on the query",
                               onclick: () => this.select(i)},
      frame,
      el("span", {class: "rank", text: `#${i + 1}`}),
      el("span", {class: "ref", text: m.reference_id}),
      el("span", {class: "score"}, el("meter", {min: 0, max: 1, low: 0.49, high: 0.5, optimum: 1, value: m.score}),
         ` ${fmt(m.score)}`),
      el("span", {class: `verdict ${copy ? "copy" : "no"}`, text: copy ? "copy" : "not a copy",
                  title: m.role ? `${m.role} in the query: region ${m.region.join(", ")} (query pixels)` : null},
         m.role ? el("span", {class: `role ${m.role}`, text: ` · ${m.role}`}) : null),
      el("span", {class: "how", text: decidedBy(m)}),
      el("span", {class: "sim", text: `cosine ${fmt(m.similarity)} · normalized ${fmt(m.global_score)} · view ${m.view}`}));
    return el("li", {}, card);
  }

  async localize(best) {
    this.edits.replaceChildren(el("p", {class: "muted", text: `Localizing the edits against ${best.reference_id}…`}));
    const params = new URLSearchParams({reference_id: best.reference_id, query_id: this.file.name});
    if (best.homography) params.set("homography", best.homography.flat().join(","));  // skips a second keypoint check
    let found;
    try {
      found = await apiJson(`/v1/localize?${params}`, {method: "POST", body: this.file,
        headers: {"Content-Type": this.file.type || "application/octet-stream"}});
    } catch (error) {
      this.edits.replaceChildren(el("p", {class: "error"}, "The edits could not be localized: ", signInHint(error)));
      return;
    }
    this.localization = found;
    const regions = found.regions.map((r, i) => el("li", {class: `region ${r.kind}`},
      el("span", {class: "num", text: String(i + 1)}),
      el("span", {class: "kind", text: r.kind === "outside" ? "outside the original's frame" : r.kind}),
      r.kind === "outside" ? null : el("span", {class: "conf", text: ` confidence ${fmt(r.confidence, 2)}`}),
      el("span", {class: "box", text: ` at ${r.box.join(", ")}`})));
    const reg = found.registration || {};
    const how = {given: "the keypoint check's geometry", keypoints: "keypoints", similarity: "image similarity"}[reg.method] || reg.method || "?";
    this.downloads.append(" · ", jsonLink(found, `${safeName(this.file.name)}.edits.json`, "Download the edits (JSON)"));
    this.edits.replaceChildren(
      el("h3", {text: `Edits against ${best.reference_id}`}),
      el("p", {}, found.regions.length
        ? `${found.regions.filter((r) => r.kind !== "outside").length} edit region(s); strongest edit score ${fmt(found.edited, 2)}; `
        : "No edited region found; ",
        `registered by ${how} (confidence ${fmt(reg.confidence, 2)}).`),
      el("figure", {class: "overlay"},
        el("img", {src: found.overlay, alt: `edits of ${this.file.name} against ${best.reference_id}: original, copy, difference`,
                   class: "overlay-img"}),
        el("figcaption", {text: "original (yellow: where the copy lies) · copy with numbered regions · difference heat map"})),
      regions.length ? el("ol", {class: "regions", "aria-label": "edit regions"}, regions) : null);
  }
}

function queryFiles(files) {
  const images = [...files].filter((f) => f.type.startsWith("image/") || !f.type);
  const k = document.getElementById("k").value;
  const verify = document.getElementById("verify").value;
  const cards = images.map((file) => new QueryCard(file));
  document.getElementById("results").prepend(...cards.map((card) => card.root));  // newest batch on top, in order
  (async () => {
    for (const card of cards) await card.run(k, verify);  // one at a time: the server batches anyway
  })();
}

function main() {
  showSummary();
  const input = document.getElementById("files");
  const drop = document.getElementById("drop");
  input.addEventListener("change", () => { queryFiles(input.files); input.value = ""; });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    queryFiles(event.dataTransfer.files);
  });
}

main();
