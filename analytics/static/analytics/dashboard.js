/* The compliance dashboard's charts (analytics.admin.AuditFactAdmin.dashboard_view), drawn with the vendored
   Chart.js from the page's <script type="application/json" id="analytics-data"> (no inline script). Every
   figure is also in the table under its chart: this only draws. */
(function () {
  "use strict";

  var GROUP_COLORS = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#8c564b", "#7f7f7f"];
  var NIVEAU_COLORS = {
    EXCELLENT: "#1b7f3b",
    BON: "#7cb342",
    ACCEPTABLE: "#e9b500",
    INSUFFISANT: "#ef7d17",
    REJET: "#c62828"
  };

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function percent(value) {
    return value === null || value === undefined ? "—" : value.toLocaleString(undefined, {minimumFractionDigits: 1, maximumFractionDigits: 1}) + " %";
  }

  function signed(change) {
    if (change === null || change === undefined) return null;
    var text = Math.abs(change).toLocaleString(undefined, {maximumFractionDigits: 1}) + " pts";
    if (change > 0) return "▲ +" + text;
    if (change < 0) return "▼ −" + text;
    return "= 0 pts";
  }

  /* Split a long text into lines of at most `size` characters (tooltip titles). */
  function wrap(text, size) {
    var lines = [], line = "";
    text.split(/\s+/).forEach(function (word) {
      if (line && (line + " " + word).length > size) {
        lines.push(line);
        line = word;
      } else {
        line = line ? line + " " + word : word;
      }
    });
    if (line) lines.push(line);
    return lines;
  }

  function trendChart(canvas, data, theme) {
    var datasets = data.trend.series.map(function (series, n) {
      var color = GROUP_COLORS[n % GROUP_COLORS.length];
      return {
        label: series.label,
        data: series.points.map(function (p) { return p ? p.percent : null; }),
        figures: series.points,
        borderColor: color,
        backgroundColor: color,
        borderWidth: 2,
        pointRadius: 3,
        clip: 6,  // the points at 0 % and 100 % whole, not halved by the chart's edge
        tension: 0
      };
    });
    if (datasets.length === 1) return lineChart(canvas, data, datasets);  // one group: its line is the overall
    datasets.push({
      label: data.trend.overall.label,
      data: data.trend.overall.points.map(function (p) { return p ? p.percent : null; }),
      figures: data.trend.overall.points,
      borderColor: theme.fg,
      backgroundColor: theme.fg,
      borderWidth: 3,
      borderDash: [6, 4],
      pointRadius: 0,
      pointHoverRadius: 4,
      clip: 6,
      tension: 0
    });
    return lineChart(canvas, data, datasets);
  }

  function lineChart(canvas, data, datasets) {
    return new Chart(canvas, {
      type: "line",
      data: {labels: data.labels, datasets: datasets},
      options: {
        responsive: true,
        maintainAspectRatio: false,
        spanGaps: true,
        interaction: {mode: "index", intersect: false},
        scales: {
          y: {min: 0, max: 100, ticks: {stepSize: 20, callback: function (v) { return v + " %"; }},
            title: {display: true, text: "Compliant audits"}},
          x: {title: {display: true, text: data.period === "week" ? "Week of sale (from Monday)" : "Month of sale"}}
        },
        plugins: {
          legend: {position: "bottom", labels: {usePointStyle: true, boxHeight: 6}},
          tooltip: {
            callbacks: {
              label: function (ctx) {
                var p = ctx.dataset.figures[ctx.dataIndex];
                if (!p) return ctx.dataset.label + ": no audit";
                return ctx.dataset.label + ": " + percent(p.percent) + " (" + p.compliant + "/" + p.audits + ")";
              }
            }
          }
        }
      }
    });
  }

  /* The rate, the counts and the change written at the end of each bar. */
  function barLabels(theme) {
    return {
      id: "analyticsBarLabels",
      afterDatasetsDraw: function (chart) {
        var ctx = chart.ctx, rows = chart.data.datasets[0].rows, area = chart.chartArea;
        ctx.save();
        ctx.font = "600 12px " + theme.font;
        ctx.textBaseline = "middle";
        chart.getDatasetMeta(0).data.forEach(function (bar, i) {
          var r = rows[i], change = signed(r.change);
          var text = percent(r.percent) + "  ·  " + r.passed + "/" + r.applicable + (change ? "  ·  " + change : "");
          var width = ctx.measureText(text).width, x = bar.x + 6;
          if (x + width > area.right) {
            x = bar.x - 6 - width;  // inside the bar, in a colour that reads on it
            ctx.fillStyle = INSIDE_TEXT[r.color] || "#fff";
          } else {
            ctx.fillStyle = theme.fg;
          }
          ctx.fillText(text, Math.max(x, area.left + 4), bar.y);
        });
        ctx.restore();
      }
    };
  }

  /* Text written inside a bar of that colour. */
  var INSIDE_TEXT = {"#e9b500": "#222", "#7cb342": "#222"};

  function rateColor(value) {
    if (value < 50) return NIVEAU_COLORS.REJET;
    if (value < 75) return NIVEAU_COLORS.INSUFFISANT;
    if (value < 90) return NIVEAU_COLORS.ACCEPTABLE;
    return NIVEAU_COLORS.BON;
  }

  function worstChart(canvas, data, theme) {
    var rows = data.worst.map(function (r) { return Object.assign({color: rateColor(r.percent)}, r); });
    canvas.parentNode.style.height = (60 + rows.length * 38) + "px";
    return new Chart(canvas, {
      type: "bar",
      data: {
        labels: rows.map(function (r) { return r.point + "  " + r.label + (r.critical ? " ⚠" : ""); }),
        datasets: [{
          label: "Compliant (passed / applicable)",
          data: rows.map(function (r) { return r.percent; }),
          rows: rows,
          backgroundColor: rows.map(function (r) { return r.color; }),
          borderRadius: 3,
          barPercentage: 0.8
        }]
      },
      options: {
        indexAxis: "y",
        responsive: true,
        maintainAspectRatio: false,
        scales: {
          x: {min: 0, max: 100, ticks: {stepSize: 20, callback: function (v) { return v + " %"; }},
            title: {display: true, text: "Passed / applicable verdicts (⚠: critical point)"}},
          y: {grid: {display: false}, ticks: {color: theme.fg}}
        },
        plugins: {
          legend: {display: false},
          tooltip: {
            callbacks: {
              title: function (items) { return wrap(rows[items[0].dataIndex].question, 70); },
              label: function (ctx) {
                var r = rows[ctx.dataIndex];
                var lines = [percent(r.percent) + " compliant: " + r.passed + " of " + r.applicable + " applicable passed"];
                lines.push(r.previous_percent === null
                  ? "Before: no verdict"
                  : "Before: " + percent(r.previous_percent) + " of " + r.previous_applicable + "  (" + signed(r.change) + ")");
                if (r.step) lines.push("Step: " + r.step + (r.config ? " (" + r.config + ")" : ""));
                if (r.critical) lines.push("Critical point");
                return lines;
              }
            }
          }
        }
      },
      plugins: [barLabels(theme)]
    });
  }

  function niveauChart(canvas, data) {
    var names = data.niveaux.names, counts = data.niveaux.counts;
    var totals = data.labels.map(function (_, i) {
      return names.reduce(function (sum, n) { return sum + counts[n][i]; }, 0);
    });
    return new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: names.map(function (name) {
          return {label: name, data: counts[name], backgroundColor: NIVEAU_COLORS[name], stack: "niveaux"};
        })
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        interaction: {mode: "index", intersect: false},
        scales: {
          x: {stacked: true, grid: {display: false},
            title: {display: true, text: data.period === "week" ? "Week of sale (from Monday)" : "Month of sale"}},
          y: {stacked: true, beginAtZero: true, ticks: {precision: 0}, title: {display: true, text: "Audits"}}
        },
        plugins: {
          legend: {position: "bottom"},
          tooltip: {
            callbacks: {
              label: function (ctx) {
                var total = totals[ctx.dataIndex];
                var share = total ? Math.round(ctx.parsed.y / total * 1000) / 10 : null;
                return ctx.dataset.label + ": " + ctx.parsed.y + (share === null ? "" : " (" + percent(share) + ")");
              },
              footer: function (items) { return "Audits: " + totals[items[0].dataIndex]; }
            }
          }
        }
      }
    });
  }

  function draw() {
    var source = document.getElementById("analytics-data");
    if (!source || typeof window.Chart === "undefined") return;
    var data = JSON.parse(source.textContent);
    var theme = {
      fg: cssVar("--body-fg", "#333"),
      quiet: cssVar("--body-quiet-color", "#666"),
      grid: cssVar("--hairline-color", "#e8e8e8"),
      font: cssVar("--font-family-primary", "sans-serif")
    };
    Chart.defaults.color = theme.quiet;
    Chart.defaults.borderColor = theme.grid;
    Chart.defaults.font.family = theme.font;
    Chart.defaults.font.size = 12;
    document.body.classList.add("charts-drawn");

    var trend = document.getElementById("chart-trend");
    if (trend) trendChart(trend, data, theme);
    var worst = document.getElementById("chart-worst");
    if (worst && data.worst.length) worstChart(worst, data, theme);
    var niveaux = document.getElementById("chart-niveaux");
    if (niveaux) niveauChart(niveaux, data);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
