// detbot's page: upload a picture (picker, drag-and-drop, paste, phone camera), wait for the queue, then
// show every box the server kept on a canvas — with its mask (segmentation) or its keypoints and skeleton
// (pose) when the model gives them. The confidence slider and the class toggles only filter the kept boxes
// here, in the browser: no request per move. Where the server has several models (/api/v1/info), a choice
// of them sends `model` with the upload. Plain JavaScript, no build step, no dependencies.
//
// Opened by Telegram as the bot's Mini App (the 🎚 button under an answer), the page shows that answer
// instead: its clean photo, the same slider and toggles, and "apply", which has the bot edit the answer in
// the chat. Telegram hands a Mini App its launch parameters in the URL's fragment (#tgWebAppData=<initData>
// &tgWebAppVersion=…); the page reads them there itself (or from window.Telegram.WebApp when a page script
// of Telegram's put one there), so no script is loaded from elsewhere, and sends initData in the
// Authorization header ("tma …"): it never travels in a URL.
"use strict";

(() => {
  const LANGUAGES = ["en", "ru"];
  // ultralytics' palette, as the server draws its own images (detector/draw.py): a class keeps its colour.
  const PALETTE = ["042AFF", "0BDBEB", "F3F3F3", "00DFB7", "111F68", "FF6FDD", "FF444F", "CCED00", "00F344",
    "BD00FF", "00B4FF", "DD00BA", "00FFFF", "26C000", "01FFB3", "7D24FF", "7B0068", "FF1B6C", "FC6D2F", "A2FF0B"];
  // Long-polling: while queued, ask again this often (seconds) to refresh the position; once running, longer.
  const WAIT_QUEUED = 2;
  const WAIT_RUNNING = 15;
  // The canvas is at most this many pixels on its long side (the server's own annotated images are, too).
  const MAX_SIDE = 2560;
  const LINE_WIDTH_PER_PX = 0.003;
  const DARK_TEXT_ABOVE = 3 * 160;
  // As detector/draw.py: how opaque a mask is (the object still shows through), and the keypoints drawn
  // (those the model is at least this sure of), each dot with a dark rim that shows on any photo.
  const MASK_ALPHA = 0.45;
  const KEYPOINT_VISIBLE = 0.5;
  const KEYPOINT_RIM = "#202020";

  const $ = (id) => document.getElementById(id);
  const state = {
    language: "en",
    catalog: null,
    keysRequired: false,
    resultTtl: 86400,
    models: [], // the server's models ({name, task}), the first the default
    file: null, // the last picture uploaded: sent again when another model is chosen
    run: 0, // each upload's number: an older upload's answer arriving late is ignored
    fileName: "",
    bitmap: null,
    job: null,
    threshold: 0.25,
    enabled: new Set(),
    mini: null, // as the Mini App: { initData, answerId }
    answer: null, // the chat's answer the Mini App shows
    photoIndex: 0,
    bitmaps: new Map(), // the answer's clean photos, by index
    classConfidence: {}, // per-class thresholds of the answer's view (the slider drops them, as − / + do)
  };

  // -- words ---------------------------------------------------------------------------------------------

  function fill(text, params) {
    return text.replace(/\{(\w+)\}/g, (whole, name) => (params && name in params ? String(params[name]) : whole));
  }

  function t(key, params) {
    return fill(state.catalog.texts[key] || key, params);
  }

  function said(key, params, count) {
    // The bot's own sentences; a plural one picks its form by the browser's plural rules.
    let text = state.catalog.bot[key];
    if (typeof text === "object") {
      const category = new Intl.PluralRules(state.language).select(count);
      text = text[category] || text.other || text.many;
    }
    return fill(text || key, { n: count, ...params });
  }

  function formatConfidence(value) {
    // Two decimals as people write thresholds; a third when the slider sits between two of them.
    const three = value.toFixed(3);
    return three.endsWith("0") ? value.toFixed(2) : three;
  }

  function shownName(box) {
    const names = (state.job && state.job.names && state.job.names[state.language]) || {};
    return names[box.class_name] || box.class_name;
  }

  function preferredLanguage() {
    const chosen = localStorage.getItem("detbot.language");
    if (LANGUAGES.includes(chosen)) return chosen;
    for (const code of navigator.languages || [navigator.language || "en"]) {
      const base = code.toLowerCase().split("-")[0];
      if (LANGUAGES.includes(base)) return base;
    }
    return "en";
  }

  async function setLanguage(language) {
    const response = await fetch(`/i18n/${language}.json`);
    state.catalog = await response.json();
    state.language = language;
    document.documentElement.lang = language;
    document.title = t("page.title");
    for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
    $("privacy").textContent = t("page.privacy", { hours: Math.round(state.resultTtl / 3600) });
    labelModels();
    if (state.job) render();
  }

  // -- the server ----------------------------------------------------------------------------------------

  function headers() {
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem("detbot.key", key);
    return key ? { "X-API-Key": key } : {};
  }

  async function problem(response) {
    try {
      const body = await response.json();
      return body.error.message;
    } catch (error) {
      return `${response.status} ${response.statusText}`;
    }
  }

  function say(text, isError) {
    $("status").textContent = text;
    $("status").classList.toggle("error", Boolean(isError));
  }

  async function loadInfo() {
    try {
      const response = await fetch("/api/v1/info");
      const info = await response.json();
      state.keysRequired = info.keys_required;
      state.resultTtl = info.result_ttl;
      state.models = info.models || [];
    } catch (error) {
      say(t("page.network"), true);
    }
    $("key-box").hidden = !state.keysRequired;
    $("api-key").value = sessionStorage.getItem("detbot.key") || "";
    offerModels();
  }

  // -- the model choice (only where the server has more than one) -------------------------------------------

  function offerModels() {
    const select = $("model");
    select.replaceChildren(...state.models.map((model) => {
      const option = document.createElement("option");
      option.value = model.name;
      return option;
    }));
    const remembered = localStorage.getItem("detbot.model");
    if (state.models.some((model) => model.name === remembered)) select.value = remembered;
    $("model-box").hidden = state.models.length < 2;
  }

  function labelModels() {
    // "segment (masks)": the model's name as the API takes it, and what it finds in the page's language
    // once its workers said (a model no worker has started yet: its name alone).
    const finds = { detect: "page.task_detect", segment: "page.task_segment", pose: "page.task_pose" };
    for (const option of $("model").options) {
      const model = state.models.find((m) => m.name === option.value);
      const task = model && finds[model.task];
      option.textContent = task ? `${model.name} (${t(task)})` : option.value;
    }
  }

  function chosenModel() {
    // The model to send: none with one model (the server's default), else the one chosen.
    return state.models.length > 1 ? $("model").value : "";
  }

  async function decode(file) {
    // The clean picture for the canvas, turned as its EXIF says (the server's boxes are in those pixels).
    try {
      const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
      const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
      if (scale >= 1) return bitmap;
      const smaller = await createImageBitmap(bitmap, {
        resizeWidth: Math.round(bitmap.width * scale), resizeHeight: Math.round(bitmap.height * scale),
        resizeQuality: "high",
      });
      bitmap.close();
      return smaller;
    } catch (error) {
      return null; // a format this browser does not show (TIFF): the server's own image stands in
    }
  }

  async function upload(file) {
    if (!file) return;
    const run = ++state.run;
    state.job = null;
    state.file = file;
    state.fileName = file.name || "picture";
    $("result").hidden = true;
    say(t("page.sending"));
    const form = new FormData();
    form.append("image", file, state.fileName);
    if (chosenModel()) form.append("model", chosenModel());
    const url = `/api/v1/detect?lang=${state.language}`;
    const [bitmap, accepted] = await Promise.all([
      decode(file), call(run, url, { method: "POST", body: form, headers: headers() }),
    ]);
    if (run !== state.run) return;
    state.bitmap = bitmap;
    if (accepted) await follow(accepted.id, run);
  }

  // One request of an upload: its JSON, or null when it failed (and the page said why) or when a newer
  // upload took over meanwhile.
  async function call(run, url, options) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      if (run === state.run) say(t("page.network"), true);
      return null;
    }
    if (run !== state.run) return null;
    if (!response.ok) {
      say(await problem(response), true);
      return null;
    }
    return response.json();
  }

  async function follow(id, run) {
    let wait = WAIT_QUEUED;
    for (;;) {
      const job = await call(run, `/api/v1/jobs/${id}?wait=${wait}&lang=${state.language}`, { headers: headers() });
      if (!job) return;
      if (job.status === "queued") {
        say(said("status.queued", { position: job.position }));
        wait = WAIT_QUEUED;
      } else if (job.status === "running") {
        say(said("status.working"));
        wait = WAIT_RUNNING;
      } else if (job.status === "failed") {
        say(job.error.message, true);
        return;
      } else {
        await show(job, run);
        return;
      }
    }
  }

  // -- as the bot's Mini App -------------------------------------------------------------------------------

  function launch() {
    // initData and the answer it opens: from Telegram's launch parameters, or none (the plain page).
    const tg = window.Telegram && window.Telegram.WebApp;
    const fragment = new URLSearchParams(window.location.hash.slice(1));
    const query = new URLSearchParams(window.location.search);
    const initData = (tg && tg.initData) || fragment.get("tgWebAppData") || "";
    if (!initData) return null;
    // A private chat's web_app button names the answer in the URL; a group's t.me link in start_param.
    const answerId = query.get("answer") || query.get("tgWebAppStartParam")
      || new URLSearchParams(initData).get("start_param") || "";
    return answerId ? { initData, answerId } : null;
  }

  function telegramEvent(type) {
    // What telegram-web-app.js would post to the Telegram app showing the page ("ready", "expand").
    const tg = window.Telegram && window.Telegram.WebApp;
    if (tg) {
      if (type === "web_app_ready" && tg.ready) tg.ready();
      if (type === "web_app_expand" && tg.expand) tg.expand();
      return;
    }
    if (window.TelegramWebviewProxy) {
      window.TelegramWebviewProxy.postEvent(type, "{}"); // Telegram's phone apps
    } else if (window.parent !== window) {
      window.parent.postMessage(JSON.stringify({ eventType: type, eventData: {} }), "https://web.telegram.org");
    }
  }

  function signedIn() {
    return { Authorization: `tma ${state.mini.initData}` };
  }

  function miniLanguage() {
    // The person's Telegram language when the page speaks it (their own choice here wins).
    if (localStorage.getItem("detbot.language")) return preferredLanguage();
    try {
      const user = JSON.parse(new URLSearchParams(state.mini.initData).get("user") || "{}");
      const base = String(user.language_code || "").split("-")[0];
      if (LANGUAGES.includes(base)) return base;
    } catch (error) {
      // not Telegram's: the browser's language
    }
    return preferredLanguage();
  }

  async function openAnswer() {
    $("drop").hidden = true;
    $("key-box").hidden = true;
    $("mini").hidden = false;
    telegramEvent("web_app_ready");
    telegramEvent("web_app_expand");
    const run = ++state.run;
    const url = `/api/v1/answers/${encodeURIComponent(state.mini.answerId)}?lang=${state.language}`;
    const answer = await call(run, url, { headers: signedIn() });
    if (!answer) return;
    state.answer = answer;
    const view = answer.view || answer.start;
    state.threshold = view.confidence;
    state.classConfidence = { ...(view.class_confidence || {}) };
    const wanted = view.classes;
    state.enabled = new Set(allCandidates().map((box) => box.class_name)
      .filter((name) => !wanted || wanted.includes(classKey(name))));
    const slider = $("confidence");
    slider.min = String(Math.min(answer.floor, state.threshold));
    slider.value = String(state.threshold);
    const choices = answer.photos.length > 1 ? answer.photos.map((photo) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = String(photo.index);
      button.dataset.index = String(photo.index);
      button.addEventListener("click", () => choosePhoto(photo.index));
      return button;
    }) : [];
    $("photos").replaceChildren(...choices);
    $("apply-box").hidden = false;
    $("download-png").hidden = true; // a Telegram app has no downloads folder: the JSON opens as a page
    $("download-json").hidden = true;
    await choosePhoto(answer.photos[0].index);
  }

  async function choosePhoto(index) {
    const photo = state.answer.photos.find((p) => p.index === index);
    state.photoIndex = index;
    for (const button of $("photos").querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.index) === index));
    }
    if (!state.bitmaps.has(index)) {
      say(t("page.photo_loading"));
      const run = state.run;
      let response;
      try {
        response = await fetch(photo.photo_url, { headers: signedIn() });
      } catch (error) {
        say(t("page.network"), true);
        return;
      }
      if (!response.ok) {
        say(await problem(response), true);
        return;
      }
      const bitmap = await decode(await response.blob());
      if (run !== state.run) return;
      state.bitmaps.set(index, bitmap);
    }
    state.bitmap = state.bitmaps.get(index);
    state.fileName = `answer-${index || 1}`;
    state.job = {
      id: state.answer.id, candidates: photo.candidates, names: mergedNames(), floor: state.answer.floor,
      result: {
        width: photo.width, height: photo.height, confidence: state.threshold, classes: null,
        class_confidence: state.classConfidence,
      },
    };
    say("");
    buildToggles();
    $("result").hidden = false;
    $("result").dataset.answer = state.answer.id;
    $("canvas").hidden = !state.bitmap;
    $("fallback").hidden = true;
    render();
  }

  function mergedNames() {
    const names = {};
    for (const photo of state.answer.photos) {
      for (const [language, table] of Object.entries(photo.names)) names[language] = { ...names[language], ...table };
    }
    return names;
  }

  function allCandidates() {
    // Every box the toggles cover: the answer's photos together, or the one picture.
    return state.answer ? state.answer.photos.flatMap((photo) => photo.candidates) : state.job.candidates;
  }

  function currentView() {
    // The view "apply" sends: what the page shows now, as DetectParams.to_dict() writes it.
    const all = new Set(allCandidates().map((box) => box.class_name));
    const classes = state.enabled.size < all.size ? [...state.enabled].map(classKey).sort() : null;
    return { confidence: Number(state.threshold.toFixed(4)), classes, class_confidence: state.classConfidence };
  }

  function applied(text, isError) {
    $("apply-status").textContent = text;
    $("apply-status").classList.toggle("error", Boolean(isError));
  }

  async function apply() {
    const button = $("apply");
    button.disabled = true;
    applied(t("page.applying"));
    let response;
    try {
      response = await fetch(`/api/v1/answers/${encodeURIComponent(state.answer.id)}/view?lang=${state.language}`, {
        method: "POST", headers: { ...signedIn(), "Content-Type": "application/json" },
        body: JSON.stringify(currentView()),
      });
    } catch (error) {
      applied(t("page.network"), true);
      button.disabled = false;
      return;
    }
    if (response.ok) {
      const body = await response.json();
      const key = { applied: "page.applied", unchanged: "page.apply_unchanged" }[body.status] || "page.apply_sent";
      applied(t(key));
      $("apply-box").dataset.status = body.status;
    } else {
      applied(await problem(response), true);
      $("apply-box").dataset.status = String(response.status);
    }
    button.disabled = false;
  }

  async function show(job, run) {
    state.job = job;
    $("result").dataset.job = job.id;
    state.threshold = job.result.confidence;
    const asked = job.result.classes;
    state.enabled = new Set(job.candidates.map((box) => box.class_name).filter((name) => !asked || asked.includes(name)));
    const slider = $("confidence");
    slider.min = String(Math.min(job.floor, state.threshold));
    slider.value = String(state.threshold);
    buildToggles();
    say("");
    $("result").hidden = false;
    $("canvas").hidden = !state.bitmap;
    $("fallback").hidden = Boolean(state.bitmap);
    $("download-png").disabled = !state.bitmap;
    if (!state.bitmap) {
      say(t("page.no_preview"));
      const response = await fetch(job.image_url, { headers: headers() });
      if (run === state.run && response.ok) $("fallback").src = URL.createObjectURL(await response.blob());
    }
    render();
  }

  // -- what is shown ---------------------------------------------------------------------------------------

  function classKey(name) {
    return name.replace(/[_-]/g, " ").toLowerCase().split(/\s+/).filter(Boolean).join(" ");
  }

  function keeps(box) {
    // DetectParams.keeps: the class is on, and the box reaches its class's own threshold or the slider's.
    const own = state.job.result.class_confidence || {};
    const threshold = classKey(box.class_name) in own ? own[classKey(box.class_name)] : state.threshold;
    return state.enabled.has(box.class_name) && box.confidence >= threshold;
  }

  function shownBoxes() {
    return state.job.candidates.filter(keeps);
  }

  function colour(classId) {
    return `#${PALETTE[classId % PALETTE.length]}`;
  }

  function buildToggles() {
    const fieldset = $("classes");
    for (const old of fieldset.querySelectorAll("label")) old.remove();
    const counts = new Map();
    for (const box of allCandidates()) counts.set(box.class_name, (counts.get(box.class_name) || 0) + 1);
    const classes = [...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a) || a.localeCompare(b));
    for (const name of classes) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = state.enabled.has(name);
      box.dataset.class = name;
      box.addEventListener("change", () => {
        if (box.checked) state.enabled.add(name); else state.enabled.delete(name);
        render();
      });
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colour(allCandidates().find((b) => b.class_name === name).class_id);
      const text = document.createElement("span");
      text.className = "class-name";
      label.append(box, swatch, text);
      fieldset.append(label);
    }
  }

  function summary(boxes) {
    const job = state.job;
    let only = "";
    const all = new Set(allCandidates().map((box) => box.class_name));
    if (state.enabled.size < all.size) {
      const names = [...state.enabled].map((name) => shownName({ class_name: name })).sort();
      only = said("answer.only", { classes: names.join(", ") });
    }
    const own = Object.entries(job.result.class_confidence || {});
    if (own.length) {
      const parts = own.sort().map(([name, value]) => `${shownName({ class_name: name })} ≥ ${formatConfidence(value)}`);
      only += said("answer.per_class", { thresholds: parts.join(", ") });
    }
    const confidence = formatConfidence(state.threshold);
    if (!boxes.length) return said("answer.nothing", { confidence, only });
    const counts = new Map();
    for (const box of boxes) counts.set(shownName(box), (counts.get(shownName(box)) || 0) + 1);
    const parts = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .map(([name, count]) => said("answer.count", { name, count }));
    return said("answer.summary", { confidence, only, counts: parts.join(", ") }, boxes.length);
  }

  function render() {
    const boxes = shownBoxes();
    $("confidence-value").textContent = formatConfidence(state.threshold);
    for (const toggle of $("classes").querySelectorAll("input")) {
      const name = toggle.dataset.class;
      const count = allCandidates().filter((box) => box.class_name === name && box.confidence >= state.threshold).length;
      toggle.parentElement.querySelector(".class-name").textContent = `${shownName({ class_name: name })} (${count})`;
    }
    $("summary").textContent = summary(boxes);
    $("shown").textContent = t("page.shown", { shown: boxes.length, total: state.job.candidates.length });
    const list = $("boxes");
    list.replaceChildren(...boxes.map((box, i) => {
      const row = document.createElement("li");
      const line = {
        index: i + 1, name: shownName(box), confidence: box.confidence.toFixed(2),
        coords: [box.x1, box.y1, box.x2, box.y2].map(Math.round).join(", "),
      };
      // A mask's part of the image after it, as the bot's list says it.
      row.textContent = hasMask(box) ? said("answer.box.share", { ...line, share: formatShare(share(box)) })
        : said("answer.box", line);
      return row;
    }));
    const drawn = state.bitmap ? draw($("canvas"), boxes, state.bitmap.width / state.job.result.width)
      : { masks: 0, keypoints: 0 };
    $("canvas").dataset.boxes = String(boxes.length);
    $("canvas").dataset.masks = String(drawn.masks);
    $("canvas").dataset.keypoints = String(drawn.keypoints);
  }

  function hasMask(box) {
    return Boolean(box.polygon && box.polygon.length >= 3);
  }

  function share(box) {
    // Detection.share: the outline's area (the shoelace formula) over the original image's.
    const { width, height } = state.job.result;
    const points = box.polygon;
    let twice = 0;
    points.forEach(([x, y], i) => {
      const [nx, ny] = points[(i + 1) % points.length];
      twice += x * ny - nx * y;
    });
    return width > 0 && height > 0 ? Math.min(Math.abs(twice) / 2 / (width * height), 1) : 0;
  }

  function formatShare(value) {
    // detector.render.format_share: "12.5%", a sliver as "<0.1%", never a misleading "0.0%".
    const percent = value * 100;
    return percent > 0 && percent < 0.05 ? "<0.1%" : `${percent.toFixed(1)}%`;
  }

  function draw(canvas, boxes, scale) {
    // As detector/draw.py draws: masks first, then boxes and keypoints, then labels ("3 circle 0.87"), the
    // most confident object's mask and label on top. Returns how many masks and keypoints it drew.
    const bitmap = state.bitmap;
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    const g = canvas.getContext("2d");
    g.drawImage(bitmap, 0, 0);
    const lw = Math.max(Math.round((canvas.width + canvas.height) / 2 * LINE_WIDTH_PER_PX), 2);
    const masks = drawMasks(g, boxes, scale);
    g.lineWidth = lw;
    for (const box of boxes) {
      g.strokeStyle = colour(box.class_id);
      g.strokeRect(box.x1 * scale, box.y1 * scale, (box.x2 - box.x1) * scale, (box.y2 - box.y1) * scale);
    }
    const keypoints = drawKeypoints(g, boxes, scale, lw);
    const size = Math.max(11, lw * 8);
    g.font = `${size}px system-ui, "DejaVu Sans", sans-serif`;
    g.textBaseline = "top";
    boxes.map((box, i) => [box, i]).reverse().forEach(([box, i]) => {
      const text = `${i + 1} ${shownName(box)} ${box.confidence.toFixed(2)}`;
      const pad = Math.round(size * 0.15);
      const width = g.measureText(text).width + 2 * pad;
      const height = size + 2 * pad;
      const x = Math.min(Math.max(0, box.x1 * scale - lw / 2), canvas.width - width);
      let y = box.y1 * scale - height;
      if (y < 0) y = box.y1 * scale;
      const hex = PALETTE[box.class_id % PALETTE.length];
      g.fillStyle = `#${hex}`;
      g.fillRect(x, y, width, height);
      const sum = [0, 2, 4].reduce((s, k) => s + parseInt(hex.slice(k, k + 2), 16), 0);
      g.fillStyle = sum > DARK_TEXT_ABOVE ? "#000" : "#fff";
      g.fillText(text, x + pad, y + pad);
    });
    return { masks, keypoints };
  }

  let maskLayer = null; // one off-screen canvas the masks are painted on, kept between renders

  function drawMasks(g, boxes, scale) {
    // Every outline filled opaque on a layer, then the layer blended once: where masks overlap, the more
    // confident one shows (painted last), never a darker mix of both — as draw_masks' single blend.
    const shaped = boxes.filter(hasMask);
    if (!shaped.length) return 0;
    const { width, height } = g.canvas;
    if (!maskLayer) maskLayer = document.createElement("canvas");
    if (maskLayer.width !== width || maskLayer.height !== height) {
      maskLayer.width = width;
      maskLayer.height = height;
    }
    const layer = maskLayer.getContext("2d");
    layer.clearRect(0, 0, width, height);
    for (const box of [...shaped].reverse()) {
      layer.fillStyle = colour(box.class_id);
      layer.beginPath();
      box.polygon.forEach(([x, y], i) => (i ? layer.lineTo(x * scale, y * scale) : layer.moveTo(x * scale, y * scale)));
      layer.closePath();
      layer.fill();
    }
    g.save();
    g.globalAlpha = MASK_ALPHA;
    g.drawImage(maskLayer, 0, 0);
    g.restore();
    return shaped.length;
  }

  function drawKeypoints(g, boxes, scale, lw) {
    // The keypoints the model is sure of as dots, joined by the result's skeleton where both ends are.
    const skeleton = state.job.result.skeleton || [];
    const radius = Math.max(lw + 1, 3);
    let drawn = 0;
    for (const box of [...boxes].reverse()) {
      if (!box.keypoints) continue;
      const points = box.keypoints.map(([x, y, c]) => (c >= KEYPOINT_VISIBLE ? [x * scale, y * scale] : null));
      g.strokeStyle = colour(box.class_id);
      g.lineWidth = lw;
      g.lineCap = "round";
      for (const [a, b] of skeleton) {
        if (!points[a] || !points[b]) continue;
        g.beginPath();
        g.moveTo(...points[a]);
        g.lineTo(...points[b]);
        g.stroke();
      }
      for (const point of points.filter(Boolean)) {
        dot(g, point, radius + 1, KEYPOINT_RIM);
        dot(g, point, radius, colour(box.class_id));
        drawn += 1;
      }
    }
    return drawn;
  }

  function dot(g, [x, y], radius, fill) {
    g.fillStyle = fill;
    g.beginPath();
    g.arc(x, y, radius, 0, 2 * Math.PI);
    g.fill();
  }

  // -- downloads -------------------------------------------------------------------------------------------

  function save(blob, name) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  function currentJson() {
    // The `detbot detect --json` object of what is shown now.
    const result = state.job.result;
    const all = new Set(state.job.candidates.map((box) => box.class_name));
    return {
      image: state.fileName, ...result, boxes: shownBoxes(), confidence: Number(state.threshold.toFixed(4)),
      classes: state.enabled.size < all.size ? [...state.enabled] : null,
    };
  }

  function stem() {
    return state.fileName.replace(/\.[^.]*$/, "") || "picture";
  }

  // -- wiring ----------------------------------------------------------------------------------------------

  function firstImage(files) {
    return [...(files || [])].find((file) => file.type.startsWith("image/") || !file.type) || null;
  }

  function wire() {
    for (const id of ["file", "camera"]) {
      $(id).addEventListener("change", (event) => {
        upload(event.target.files[0]);
        event.target.value = "";
      });
    }
    let depth = 0;
    document.addEventListener("dragenter", (event) => {
      event.preventDefault();
      depth += 1;
      $("drop-overlay").hidden = false;
    });
    document.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) $("drop-overlay").hidden = true;
    });
    document.addEventListener("dragover", (event) => event.preventDefault());
    document.addEventListener("drop", (event) => {
      event.preventDefault();
      depth = 0;
      $("drop-overlay").hidden = true;
      upload(firstImage(event.dataTransfer.files));
    });
    document.addEventListener("paste", (event) => {
      const file = firstImage(event.clipboardData && event.clipboardData.files);
      if (file) {
        event.preventDefault();
        upload(file);
      }
    });
    $("confidence").addEventListener("input", (event) => {
      state.threshold = Number(event.target.value);
      if (state.answer) {
        // One threshold for every class, as the answer's − / + buttons set it: its per-class ones go.
        state.classConfidence = {};
        state.job.result.class_confidence = state.classConfidence;
        state.job.result.confidence = state.threshold;
      }
      render();
    });
    $("apply").addEventListener("click", apply);
    $("model").addEventListener("change", (event) => {
      localStorage.setItem("detbot.model", event.target.value);
      if (state.file && !state.mini) upload(state.file); // the same picture, to the model chosen
    });
    $("language").addEventListener("click", () => {
      const next = state.language === "ru" ? "en" : "ru";
      localStorage.setItem("detbot.language", next);
      setLanguage(next);
    });
    $("download-json").addEventListener("click", () => {
      const text = JSON.stringify(currentJson(), null, 1);
      save(new Blob([text], { type: "application/json" }), `${stem()}.json`);
    });
    $("download-png").addEventListener("click", () => {
      $("canvas").toBlob((blob) => save(blob, `${stem()}-detbot.png`), "image/png");
    });
  }

  async function start() {
    wire();
    state.mini = launch();
    await loadInfo();
    await setLanguage(state.mini ? miniLanguage() : preferredLanguage());
    if (state.mini) await openAnswer();
    document.body.dataset.ready = "true";
  }

  start();
})();
