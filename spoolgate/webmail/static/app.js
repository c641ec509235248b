// Spoolgate webmail: keyboard shortcuts for the message list (progressive enhancement).
// j / k move the selection, Enter opens it, # moves it to Trash. Nothing here is needed
// for the pages to work; without JavaScript every link and form still does its job.
(function () {
  "use strict";

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("#messages .message"));
  }

  function selected() {
    return document.querySelector("#messages .message.selected");
  }

  function select(row) {
    var old = selected();
    if (old) { old.classList.remove("selected"); old.removeAttribute("aria-current"); }
    row.classList.add("selected");
    row.setAttribute("aria-current", "true");
    row.querySelector("a").focus();
  }

  function move(step) {
    var all = rows();
    if (!all.length) { return; }
    var index = all.indexOf(selected());
    var next = index < 0 ? 0 : Math.min(all.length - 1, Math.max(0, index + step));
    select(all[next]);
  }

  function trash(row) {
    var token = document.querySelector('meta[name="csrf-token"]');
    if (!row || !token) { return; }
    var form = document.createElement("form");
    form.method = "post";
    form.action = "/m/" + encodeURIComponent(row.getAttribute("data-id")) + "/delete";
    var field = document.createElement("input");
    field.type = "hidden";
    field.name = "csrf";
    field.value = token.getAttribute("content");
    form.appendChild(field);
    document.body.appendChild(form);
    form.submit();
  }

  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    if (event.key === "j") { move(1); event.preventDefault(); }
    else if (event.key === "k") { move(-1); event.preventDefault(); }
    else if (event.key === "Enter" && selected() && event.target === document.body) {
      window.location.href = selected().querySelector("a").href;
    } else if (event.key === "#") {
      var deleteForm = document.getElementById("delete-form");
      if (deleteForm) { deleteForm.submit(); } else { trash(selected()); }
      event.preventDefault();
    }
  });

  document.addEventListener("focusin", function (event) {
    var row = event.target.closest && event.target.closest("#messages .message");
    if (row && !row.classList.contains("selected")) { select(row); }
  });
})();
