// The upload page's image picker: drag and drop, thumbnails, a count and remove-one. It keeps the
// plain <input type="file" multiple> in sync, so the form still posts the files itself, and it
// reports the count and size to the cost line through two hidden fields.
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
  const accepted = input.accept.split(",");
  const chosen = []; // {file, url}: what the form will send
  let skipped = 0;

  picker.classList.add("enhanced");

  function describe() {
    const count = chosen.length;
    let text = count === 0 ? "No images chosen yet." : count + (count === 1 ? " image" : " images") + " chosen.";
    if (count > maxImages) {
      text += " A batch takes at most " + maxImages + ": remove " + (count - maxImages) + ".";
    }
    if (skipped) {
      text += " Skipped " + skipped + (skipped === 1 ? " file that is" : " files that are") + " not PNG, JPEG or WebP.";
    }
    countText.textContent = text;
  }

  function thumbnail(item, index) {
    const entry = document.createElement("li");
    const image = document.createElement("img");
    image.src = item.url;
    image.alt = "";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = item.file.name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", "Remove " + item.file.name);
    remove.addEventListener("click", function () {
      removeAt(index);
    });
    entry.append(image, name, remove);
    return entry;
  }

  function sync() {
    const transfer = new DataTransfer();
    chosen.forEach(function (item) {
      transfer.items.add(item.file);
    });
    input.files = transfer.files;
    list.replaceChildren.apply(list, chosen.map(thumbnail));
    describe();
    countField.value = chosen.length;
    bytesField.value = chosen.reduce(function (sum, item) {
      return sum + item.file.size;
    }, 0);
    countField.dispatchEvent(new Event("change", { bubbles: true })); // the cost line listens
  }

  function add(files) {
    skipped = 0;
    Array.from(files).forEach(function (file) {
      if (accepted.includes(file.type)) {
        chosen.push({ file: file, url: URL.createObjectURL(file) });
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
  function applyCostVerdict() {
    document.getElementById("generate").disabled = !!document.getElementById("cost-problem");
  }
  document.addEventListener("htmx:afterSwap", applyCostVerdict); // the line, or a refused form

  // After htmx has wired the cost line (it does so on DOMContentLoaded, registered before us):
  // report the count, counting files the browser restored (back button) too.
  document.addEventListener("DOMContentLoaded", function () {
    applyCostVerdict();
    add(input.files);
  });
})();
