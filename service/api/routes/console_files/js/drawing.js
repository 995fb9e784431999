// A drawing pad for digits: white strokes on black, by mouse, pen, finger or keyboard.

const STROKE = 22;

export function makeDrawingPad(canvas) {
  const context = canvas.getContext("2d");
  let drawing = false;
  let last = null;
  let cursor = { x: canvas.width / 2, y: canvas.height / 2 };

  function reset() {
    context.fillStyle = "#000";
    context.fillRect(0, 0, canvas.width, canvas.height);
  }

  function point(event) {
    const box = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * canvas.width) / box.width,
      y: ((event.clientY - box.top) * canvas.height) / box.height,
    };
  }

  function line(from, to) {
    context.strokeStyle = "#fff";
    context.lineWidth = STROKE;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(from.x, from.y);
    context.lineTo(to.x, to.y);
    context.stroke();
  }

  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    last = point(event);
    line(last, last);
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const next = point(event);
    line(last, next);
    last = next;
  });
  for (const type of ["pointerup", "pointercancel"]) {
    canvas.addEventListener(type, () => {
      drawing = false;
    });
  }
  // Keyboard: arrow keys move a pen that draws as it moves (space marks a dot).
  canvas.tabIndex = 0;
  canvas.addEventListener("keydown", (event) => {
    const steps = { ArrowUp: [0, -10], ArrowDown: [0, 10], ArrowLeft: [-10, 0], ArrowRight: [10, 0] };
    const step = steps[event.key];
    if (!step && event.key !== " ") return;
    event.preventDefault();
    const next = step ? { x: cursor.x + step[0], y: cursor.y + step[1] } : cursor;
    line(cursor, next);
    cursor = next;
  });

  reset();
  return {
    clear: reset,
    toBlob: () => new Promise((resolve) => canvas.toBlob(resolve, "image/png")),
  };
}
