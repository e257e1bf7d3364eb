// 消保预警 console: the little script the pages need. No framework; everything works without it
// except the print buttons.
(function () {
  "use strict";
  // Letters and digests sit in a declarative shadow root; browsers without support for it get one here.
  document.querySelectorAll("template[shadowrootmode]").forEach(function (tpl) {
    var host = tpl.parentNode;
    if (host.shadowRoot) return;
    var root = host.attachShadow({ mode: tpl.getAttribute("shadowrootmode") || "open" });
    root.appendChild(tpl.content);
    tpl.remove();
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-print]");
    if (button) {
      event.preventDefault();
      window.print();
    }
  });
})();
// On a phone the filter form starts folded unless a filter is in use.
(function () {
  "use strict";
  var box = document.querySelector("details.filter-box[data-collapse-narrow=yes]");
  if (box && window.matchMedia("(max-width: 720px)").matches) box.open = false;
})();
