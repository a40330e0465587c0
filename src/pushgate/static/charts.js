// Live charts for the console: a few series over the last minutes, drawn on <canvas>
// with nothing but the 2D context (no library, no build step).
//
// A Series keeps (time, value) points for `span` seconds. A Chart draws one or more
// series on its canvas, scaled to their largest value, with the latest value of each
// written beside its name in the chart's legend.

export class Series {
  constructor(name, color, { span = 300 } = {}) {
    this.name = name;
    this.color = color;
    this.span = span;
    this.points = [];
  }

  add(time, value) {
    if (value === null || value === undefined || Number.isNaN(value)) return;
    this.points.push([time, value]);
    const oldest = time - this.span * 1000;
    while (this.points.length && this.points[0][0] < oldest) this.points.shift();
  }

  get latest() {
    return this.points.length ? this.points[this.points.length - 1][1] : null;
  }
}

export class Chart {
  /** canvas: a <canvas>; legend: an element whose children name each series. */
  constructor(canvas, legend, series, { unit = "", digits = 0 } = {}) {
    this.canvas = canvas;
    this.legend = legend;
    this.series = series;
    this.unit = unit;
    this.digits = digits;
    this.labels = series.map((s) => {
      const item = document.createElement("span");
      item.className = "legend-item";
      item.style.setProperty("--color", s.color);
      const value = document.createElement("b");
      value.className = "now";
      value.dataset.series = s.name;
      item.append(`${s.name} `, value);
      legend.append(item);
      return value;
    });
  }

  format(value) {
    if (value === null) return "—";
    return value.toFixed(this.digits) + (this.unit ? ` ${this.unit}` : "");
  }

  draw(now = Date.now()) {
    this.series.forEach((s, i) => (this.labels[i].textContent = this.format(s.latest)));
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== width * ratio || canvas.height !== height * ratio) {
      canvas.width = width * ratio;
      canvas.height = height * ratio;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const span = Math.max(...this.series.map((s) => s.span)) * 1000;
    const top = Math.max(1e-9, ...this.series.flatMap((s) => s.points.map(([, v]) => v)));
    const pad = 14;
    ctx.strokeStyle = "#e1e5ee";
    ctx.fillStyle = "#8a93a6";
    ctx.font = "10px system-ui, sans-serif";
    ctx.beginPath();
    ctx.moveTo(0, pad);
    ctx.lineTo(width, pad);
    ctx.moveTo(0, height - 1);
    ctx.lineTo(width, height - 1);
    ctx.stroke();
    ctx.fillText(this.format(top), 2, pad - 3);
    for (const s of this.series) {
      if (!s.points.length) continue;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      s.points.forEach(([time, value], i) => {
        const x = width - ((now - time) / span) * width;
        const y = height - 1 - (value / top) * (height - 1 - pad);
        if (i === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      });
      ctx.stroke();
      if (s.points.length === 1) {
        const [time, value] = s.points[0];
        const x = width - ((now - time) / span) * width;
        const y = height - 1 - (value / top) * (height - 1 - pad);
        ctx.fillStyle = s.color;
        ctx.fillRect(x - 2, y - 2, 4, 4);
      }
    }
    this.canvas.dataset.points = String(this.series.reduce((n, s) => n + s.points.length, 0));
  }
}

/** The q-quantile (seconds) of the observations between two cumulative histograms
 * ({le: [bounds..., null], cumulative: [...]}), linear within its bucket. */
export function quantileBetween(before, after, q) {
  if (!before || !after) return null;
  const counts = after.cumulative.map((c, i) => c - (before.cumulative[i] ?? 0));
  const total = counts[counts.length - 1];
  if (!(total > 0)) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (let i = 0; i < counts.length; i++) {
    const bound = after.le[i];
    if (counts[i] >= rank) {
      if (bound === null) return lower;
      return lower + ((bound - lower) * (rank - below)) / Math.max(counts[i] - below, 1e-12);
    }
    lower = bound ?? lower;
    below = counts[i];
  }
  return lower;
}
