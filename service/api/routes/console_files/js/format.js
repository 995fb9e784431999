// How numbers, radii and labels are written, the same way the published reports write them.

export const THREAT_NAMES = {
  transfer: "transfer",
  naive: "naive white-box",
  bpda: "BPDA",
  gradient_free: "gradient-free",
};

export function threatName(threat) {
  return THREAT_NAMES[threat] || threat;
}

export function normName(norm) {
  return norm === "linf" ? "L-inf" : "L2";
}

export function percent(value) {
  return value === null || value === undefined ? "n/a" : `${(100 * value).toFixed(1)}%`;
}

// A radius as people write it: a short decimal when it is one (0.3, 0.25), else a whole number
// of 255ths when it is one (8/255, 32/255), else six significant digits. The same rule as
// format_eps in robustness/render.py.
export function formatEpsilon(eps) {
  if (eps === null || eps === undefined) return "unbounded";
  const decimal = String(Number(eps.toPrecision(6)));
  if (Number(decimal) === eps) return decimal;
  const in255 = eps * 255;
  if (Math.abs(in255 - Math.round(in255)) < 1e-6) return `${Math.round(in255)}/255`;
  return decimal;
}

// A label as a person reads it: the class name where known, else the index.
export function className(index, names) {
  return names && index >= 0 && index < names.length ? names[index] : String(index);
}

// The report's model's class names: recorded in the report, else the loaded model's of that
// name (reports made before they recorded them), else none.
export function classNamesOf(report, models) {
  const model = report.model || {};
  if (Array.isArray(model.class_names) && model.class_names.length) return model.class_names;
  const loaded = (models || []).find((m) => m.name === model.name);
  return loaded ? loaded.class_names : null;
}

// A time as the service or a report gives it (ISO 8601, UTC), as people read it.
export function when(iso) {
  return iso ? iso.replace("T", " ").replace(/(Z|\+00:00)$/, " UTC") : "-";
}

// "eps=0.00784314" in a flag's evidence (six digits, as the report wrote it) as the radius the
// request named, written as everywhere else: "eps=2/255". The same as robustness/render.py's
// radii_as_given.
export function radiiAsGiven(text, report) {
  const request = report.request || {};
  const radii = [...(request.epsilons || []), ...(request.l2_epsilons || []),
    ...(request.sanity_epsilon ? [request.sanity_epsilon] : [])];
  return text.replace(/eps=([0-9][0-9.e+-]*)/g, (whole, number) => {
    const value = Number(number);
    const radius = radii.find((r) => Math.abs(r - value) <= 1e-5 * Math.max(Math.abs(r), 1e-12));
    return radius === undefined || Number.isNaN(value) ? whole : `eps=${formatEpsilon(radius)}`;
  });
}
