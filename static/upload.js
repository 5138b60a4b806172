// The upload page's image picker: drag and drop, thumbnails, a count and remove-one. It keeps the
// plain <input type="file" multiple> in sync, so the form still posts the files itself, and it
// reports the count and size to the cost line through two hidden fields.
//
// Each file is checked here before anything is sent: its first bytes (a PNG, JPEG or WebP
// signature), its size against the server's limit, and whether the browser can decode it. A bad
// one is marked on its thumbnail with the reason and is neither counted, priced nor sent. The
// server still checks every file and names each bad one it finds.
(function () {
  "use strict";
  const picker = document.getElementById("picker");
  if (!picker) {
    return;
  }
  const input = document.getElementById("images");
  const list = document.getElementById("thumbnails");
  const countText = document.getElementById("images-count");
  const countField = document.getElementById("imageCount");
  const bytesField = document.getElementById("imageBytes");
  const maxImages = Number(picker.dataset.maxImages);
  const maxImageBytes = Number(picker.dataset.maxImageBytes);
  const accepted = input.accept.split(",");
  // {file, url, state: "checking" | "good" | "bad", reason}: the good ones are what the form sends
  const chosen = [];
  let skipped = 0;
  const SIGNATURES = [
    [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], // PNG
    [0xff, 0xd8, 0xff], // JPEG
  ];

  function good() {
    return chosen.filter(function (item) {
      return item.state === "good";
    });
  }

  function startsWith(bytes, signature, offset) {
    return signature.every(function (byte, index) {
      return bytes[(offset || 0) + index] === byte;
    });
  }

  function isImageSignature(bytes) {
    const riff = startsWith(bytes, [0x52, 0x49, 0x46, 0x46]); // "RIFF" .... "WEBP"
    return (
      SIGNATURES.some(function (signature) {
        return startsWith(bytes, signature);
      }) ||
      (riff && startsWith(bytes, [0x57, 0x45, 0x42, 0x50], 8))
    );
  }

  // Answers the reason a file cannot go in the batch, or null; the words are the server's.
  function problemWith(item) {
    const file = item.file;
    if (file.size === 0) {
      return Promise.resolve(file.name + " is empty");
    }
    if (file.size > maxImageBytes) {
      return Promise.resolve(file.name + " is larger than " + Math.floor(maxImageBytes / 1048576) + " MB");
    }
    return file
      .slice(0, 16)
      .arrayBuffer()
      .then(function (buffer) {
        if (!isImageSignature(new Uint8Array(buffer))) {
          return file.name + " is not a PNG, JPEG or WebP image";
        }
        const probe = new Image();
        probe.src = item.url;
        return probe.decode().then(
          function () {
            return null;
          },
          function () {
            return file.name + " is not a readable PNG, JPEG or WebP image";
          }
        );
      });
  }

  function check(item) {
    problemWith(item)
      .catch(function () {
        return item.file.name + " could not be read";
      })
      .then(function (reason) {
        if (!chosen.includes(item)) {
          return; // removed while it was being checked
        }
        item.state = reason ? "bad" : "good";
        item.reason = reason;
        sync();
      });
  }

  picker.classList.add("enhanced");

  function describe() {
    const count = good().length;
    const bad = chosen.filter(function (item) {
      return item.state === "bad";
    }).length;
    const checking = chosen.length - count - bad;
    let text = count === 0 ? "No images chosen yet." : count + (count === 1 ? " image" : " images") + " chosen.";
    if (count > maxImages) {
      text += " A batch takes at most " + maxImages + ": remove " + (count - maxImages) + ".";
    }
    if (checking) {
      text += " Checking " + checking + (checking === 1 ? " file…" : " files…");
    }
    if (bad) {
      text += " " + bad + (bad === 1 ? " file is" : " files are") + " left out: see " + (bad === 1 ? "its reason" : "their reasons") + ".";
    }
    if (skipped) {
      text += " Skipped " + skipped + (skipped === 1 ? " file that is" : " files that are") + " not PNG, JPEG or WebP.";
    }
    countText.textContent = text;
  }

  function thumbnail(item, index) {
    const entry = document.createElement("li");
    entry.className = item.state;
    // A bad file gets a plain tile, not a broken image; its reason is said under its name.
    const image = document.createElement(item.state === "bad" ? "span" : "img");
    if (item.state === "bad") {
      image.className = "no-preview";
      image.setAttribute("aria-hidden", "true");
      image.textContent = "✕";
    } else {
      image.src = item.url;
      image.alt = "";
    }
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = item.file.name;
    const parts = [image, name];
    if (item.state === "bad") {
      const reason = document.createElement("span");
      reason.className = "reason";
      reason.textContent = item.reason;
      parts.push(reason);
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", "Remove " + item.file.name);
    remove.addEventListener("click", function () {
      removeAt(index);
    });
    parts.push(remove);
    entry.append.apply(entry, parts);
    return entry;
  }

  function sync() {
    const transfer = new DataTransfer();
    good().forEach(function (item) {
      transfer.items.add(item.file);
    });
    input.files = transfer.files;
    list.replaceChildren.apply(list, chosen.map(thumbnail));
    describe();
    countField.value = good().length;
    bytesField.value = good().reduce(function (sum, item) {
      return sum + item.file.size;
    }, 0);
    countField.dispatchEvent(new Event("change", { bubbles: true })); // the cost line listens
    applyCostVerdict();
  }

  function add(files) {
    skipped = 0;
    Array.from(files).forEach(function (file) {
      if (accepted.includes(file.type)) {
        const item = { file: file, url: URL.createObjectURL(file), state: "checking", reason: null };
        chosen.push(item);
        check(item);
      } else {
        skipped += 1;
      }
    });
    sync();
  }

  function removeAt(index) {
    URL.revokeObjectURL(chosen[index].url);
    chosen.splice(index, 1);
    skipped = 0;
    sync();
    // Keep the keyboard where it was: on the next remove button, or back on the picker.
    const buttons = list.querySelectorAll("button.remove");
    (buttons[Math.min(index, buttons.length - 1)] || input).focus();
  }

  // A file dialog replaces the input's files: add its picks to those already chosen.
  input.addEventListener("change", function (event) {
    event.stopPropagation(); // the cost line hears the "change" sync() sends instead
    add(input.files);
  });
  ["dragenter", "dragover"].forEach(function (type) {
    picker.addEventListener(type, function (event) {
      event.preventDefault();
      picker.classList.add("dragging");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    picker.addEventListener(type, function () {
      picker.classList.remove("dragging");
    });
  });
  picker.addEventListener("drop", function (event) {
    event.preventDefault();
    add(event.dataTransfer.files);
  });

  // The server's cost line says whether the batch can be submitted: a reason shown means no.
  // Nor while a file is still being checked.
  function applyCostVerdict() {
    const checking = chosen.some(function (item) {
      return item.state === "checking";
    });
    document.getElementById("generate").disabled = checking || !!document.getElementById("cost-problem");
  }
  document.addEventListener("htmx:afterSwap", applyCostVerdict); // the line, or a refused form

  // The prompt's counter, against the server's limit (the textarea's maxlength). Its text follows
  // each keystroke; a screen reader is told the count once, when typing pauses. Found afresh each
  // time: a refused form is swapped in whole (all but the picker).
  let announce = null;
  function countPrompt(speak) {
    const prompt = document.getElementById("prompt");
    const counter = document.getElementById("prompt-count");
    if (!prompt || !counter) {
      return;
    }
    const max = Number(counter.dataset.max);
    const length = prompt.value.length;
    let text = length.toLocaleString("en-US") + " / " + max.toLocaleString("en-US") + " characters";
    if (length > max) {
      text += ": " + (length - max).toLocaleString("en-US") + " too many";
    }
    counter.textContent = text;
    counter.classList.toggle("over", length > max);
    if (speak) {
      clearTimeout(announce); // a cost line swapped in meanwhile leaves the pending one be
      announce = setTimeout(function () {
        const status = document.getElementById("prompt-count-status");
        if (status) {
          status.textContent = text;
        }
      }, 1000);
    }
  }
  document.addEventListener("input", function (event) {
    if (event.target.id === "prompt") {
      countPrompt(true);
    }
  });
  document.addEventListener("htmx:afterSwap", function () {
    countPrompt(false);
  });

  // After htmx has wired the cost line (it does so on DOMContentLoaded, registered before us):
  // report the count, counting files the browser restored (back button) too.
  document.addEventListener("DOMContentLoaded", function () {
    countPrompt(false);
    applyCostVerdict();
    add(input.files);
  });
})();
