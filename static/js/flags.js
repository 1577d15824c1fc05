// Flag pages: split bars, the per-environment rules editor (rules, conditions, serve / rollout
// slider) and the variants editor. The forms post JSON that the server validates; this file only
// builds that JSON and keeps the page readable. No inline scripts: the CSP forbids them.
(function () {
  "use strict";

  function $(root, selector) { return root.querySelector(selector); }
  function $$(root, selector) { return Array.prototype.slice.call(root.querySelectorAll(selector)); }

  function fmt(n) {
    return Math.round(n * 10) / 10 + "";
  }

  // ---------------------------------------------------------------- split bars (read-only)

  function paintBar(bar, parts) {
    bar.textContent = "";
    parts.forEach(function (part, i) {
      var seg = document.createElement("span");
      seg.className = "seg seg-" + (i + 1);
      seg.style.width = Math.max(0, part.weight) + "%";
      seg.title = part.variant + " " + fmt(part.weight) + "%";
      bar.appendChild(seg);
    });
  }

  function paintStaticBars(root) {
    $$(root, "[data-split-bar] .seg[data-weight]").forEach(function (seg) {
      seg.style.width = parseFloat(seg.dataset.weight || "0") + "%";
    });
  }

  // ---------------------------------------------------------------- values typed in inputs

  // "3" → 3, "true" → true, "\"3\"" → "3", anything else stays text.
  function scalar(text) {
    var t = text.trim();
    if (/^-?\d+(\.\d+)?$/.test(t)) return Number(t);
    if (t === "true") return true;
    if (t === "false") return false;
    if (t.length > 1 && t[0] === '"' && t[t.length - 1] === '"') return t.slice(1, -1);
    return t;
  }

  var LIST_OPS = { "in": 1, "not_in": 1 };
  var NUMBER_OPS = { "gt": 1, "gte": 1, "lt": 1, "lte": 1, "percentage": 1 };
  var TEXT_OPS = { "contains": 1, "starts_with": 1, "ends_with": 1 };

  function readCondition(el) {
    var op = $(el, "[data-field=operator]").value;
    var raw = $(el, "[data-field=value]").value;
    var condition = { attribute: $(el, "[data-field=attribute]").value.trim(), operator: op };
    if (LIST_OPS[op]) {
      condition.values = raw.split(",").map(function (v) { return v.trim(); })
        .filter(function (v) { return v !== ""; }).map(scalar);
    } else if (NUMBER_OPS[op]) {
      condition.value = raw.trim() === "" ? null : Number(raw);
    } else if (TEXT_OPS[op] || op.indexOf("semver_") === 0) {
      condition.value = raw.trim();
    } else {
      condition.value = scalar(raw);
    }
    return condition;
  }

  // ---------------------------------------------------------------- serve blocks

  function weightInputs(serve) { return $$(serve, "[data-weight-for]"); }

  function sliderVariant(serve) {
    var inputs = weightInputs(serve);
    if (inputs.length !== 2) return null;
    var editor = serve.closest("[data-rules-editor]");
    var off = editor ? editor.dataset.offVariant : "";
    var pick = inputs.filter(function (i) { return i.dataset.weightFor !== off; });
    return (pick.length === 1 ? pick[0] : inputs[1]);
  }

  function refreshServe(serve) {
    var mode = $(serve, "[data-field=mode]").value;
    $$(serve, "[data-when]").forEach(function (el) {
      // Only this block's own parts (a rule's serve is not nested, but be safe).
      if (el.closest("[data-serve]") === serve) el.hidden = el.dataset.when !== mode;
    });
    if (mode !== "split") return;
    var inputs = weightInputs(serve);
    var parts = inputs.map(function (i) {
      return { variant: i.dataset.weightFor, weight: parseFloat(i.value) || 0 };
    });
    var total = parts.reduce(function (sum, p) { return sum + p.weight; }, 0);
    paintBar($(serve, "[data-split-bar]"), parts);
    var text = parts.filter(function (p) { return p.weight > 0; }).map(function (p) {
      return fmt(p.weight) + "% get " + p.variant;
    }).join(" · ");
    var note = $(serve, "[data-split-text]");
    if (Math.abs(total - 100) > 0.0001) {
      note.textContent = (text ? text + " — " : "") + "the weights add up to " + fmt(total) +
        "%; they must add up to 100%.";
      note.classList.add("warn-text");
    } else {
      note.textContent = text + " (sticky per targeting key)";
      note.classList.remove("warn-text");
    }
    var target = sliderVariant(serve);
    var row = $(serve, "[data-slider-row]");
    row.hidden = !target;
    if (target) {
      $(serve, "[data-slider-name]").textContent = "Roll out " + target.dataset.weightFor + ": " +
        fmt(parseFloat(target.value) || 0) + "%";
      $(serve, "[data-slider]").value = parseFloat(target.value) || 0;
    }
  }

  function readServe(serve) {
    if ($(serve, "[data-field=mode]").value === "split") {
      return {
        rollout: weightInputs(serve).map(function (i) {
          return { variant: i.dataset.weightFor, weight: parseFloat(i.value) || 0 };
        }).filter(function (p) { return p.weight > 0; })
      };
    }
    return { variant: $(serve, "[data-field=variant]").value };
  }

  function startSplit(serve) {
    var inputs = weightInputs(serve);
    var total = inputs.reduce(function (s, i) { return s + (parseFloat(i.value) || 0); }, 0);
    if (total > 0 || !inputs.length) return;
    var editor = serve.closest("[data-rules-editor]");
    var off = editor ? editor.dataset.offVariant : "";
    var first = inputs.filter(function (i) { return i.dataset.weightFor === off; })[0] || inputs[0];
    first.value = 100;
  }

  // ---------------------------------------------------------------- rules editor

  function renumber(editor) {
    $$(editor, "[data-rule]").forEach(function (rule, i) {
      $(rule, "[data-rule-no]").textContent = i + 1;
      $$(rule, "[data-condition]").forEach(function (c, j) {
        $(c, ".cond-word").textContent = j === 0 ? "if" : "and";
      });
    });
  }

  function fromTemplate(editor, name) {
    var tpl = $(editor, 'template[data-template="' + name + '"]');
    return tpl.content.firstElementChild.cloneNode(true);
  }

  function serialize(editor) {
    return {
      enabled: $(editor, "[data-field=enabled]").checked,
      rules: $$(editor, "[data-rule-list] > [data-rule]").map(function (rule) {
        return {
          name: $(rule, "[data-field=name]").value.trim(),
          conditions: $$(rule, "[data-condition]").map(readCondition),
          serve: readServe($(rule, "[data-serve]"))
        };
      }),
      "default": readServe(editor.querySelector(":scope > [data-serve]"))
    };
  }

  function initRulesEditor(editor) {
    $$(editor, "[data-serve]").forEach(refreshServe);
    renumber(editor);

    editor.addEventListener("click", function (event) {
      var button = event.target.closest("button");
      if (!button || !editor.contains(button)) return;
      if (button.hasAttribute("data-add-rule")) {
        var rule = fromTemplate(editor, "rule");
        $(editor, "[data-rule-list]").appendChild(rule);
        refreshServe($(rule, "[data-serve]"));
        renumber(editor);
        $(rule, "[data-field=attribute]").focus();
      } else if (button.hasAttribute("data-add-condition")) {
        var condition = fromTemplate(editor, "condition");
        $(button.closest("[data-rule]"), "[data-conditions]").appendChild(condition);
        renumber(editor);
        $(condition, "[data-field=attribute]").focus();
      } else if (button.dataset.remove === "rule") {
        button.closest("[data-rule]").remove();
        renumber(editor);
      } else if (button.dataset.remove === "condition") {
        var box = button.closest("[data-conditions]");
        if ($$(box, "[data-condition]").length > 1) button.closest("[data-condition]").remove();
        renumber(editor);
      } else if (button.dataset.move) {
        var li = button.closest("[data-rule]");
        if (button.dataset.move === "up" && li.previousElementSibling) {
          li.parentNode.insertBefore(li, li.previousElementSibling);
        } else if (button.dataset.move === "down" && li.nextElementSibling) {
          li.parentNode.insertBefore(li.nextElementSibling, li);
        }
        renumber(editor);
      }
    });

    editor.addEventListener("input", function (event) {
      var serve = event.target.closest("[data-serve]");
      if (!serve) return;
      if (event.target.hasAttribute("data-slider")) {
        var target = sliderVariant(serve);
        var other = weightInputs(serve).filter(function (i) { return i !== target; })[0];
        target.value = event.target.value;
        other.value = 100 - Number(event.target.value);
      } else if (event.target.hasAttribute("data-weight-for")) {
        var inputs = weightInputs(serve);
        if (inputs.length === 2) {
          var rest = inputs.filter(function (i) { return i !== event.target; })[0];
          rest.value = fmt(Math.max(0, 100 - (parseFloat(event.target.value) || 0)));
        }
      }
      refreshServe(serve);
    });

    editor.addEventListener("change", function (event) {
      var serve = event.target.closest("[data-serve]");
      if (serve && event.target.dataset.field === "mode") {
        if (event.target.value === "split") startSplit(serve);
        refreshServe(serve);
      }
    });

    editor.addEventListener("submit", function () {
      $(editor, "[data-content]").value = JSON.stringify(serialize(editor));
    });
  }

  // ---------------------------------------------------------------- variants editor

  function flagType(form) {
    var select = $(form, "select[name=flag_type]");
    return select ? select.value : form.dataset.flagType;
  }

  function valueText(value) {
    if (value === undefined || value === null) return "";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function parseValue(type, text) {
    var t = text.trim();
    if (type === "boolean") {
      if (t === "true" || t === "false") return t === "true";
      throw new Error("a boolean variant's value is true or false");
    }
    if (type === "number") {
      if (t === "" || isNaN(Number(t))) throw new Error("“" + text + "” is not a number");
      return Number(t);
    }
    if (type === "json") {
      try { return JSON.parse(t); } catch (e) {
        throw new Error("“" + text + "” is not valid JSON (" + e.message + ")");
      }
    }
    return text;
  }

  function addVariantRow(form, variant) {
    var row = fromTemplate(form, "variant");
    $(row, "[data-field=key]").value = variant.key || "";
    $(row, "[data-field=value]").value = valueText(variant.value);
    $(row, "[data-field=description]").value = variant.description || "";
    if (variant.ref) {
      $(row, "[data-field=ref]").value =
        variant.ref.kind + ":" + variant.ref.key + ":" + variant.ref.version;
    }
    $(form, "[data-variant-rows]").appendChild(row);
    return row;
  }

  function refreshOffVariant(form) {
    var select = $(form, "[data-off-variant]");
    var current = select.value || select.dataset.initial;
    var keys = $$(form, "[data-variant] [data-field=key]").map(function (i) { return i.value.trim(); })
      .filter(function (k) { return k; });
    select.textContent = "";
    keys.forEach(function (key) {
      var option = document.createElement("option");
      option.value = option.textContent = key;
      if (key === current) option.selected = true;
      select.appendChild(option);
    });
  }

  function booleanRows(form) {
    $(form, "[data-variant-rows]").textContent = "";
    addVariantRow(form, { key: "on", value: true });
    addVariantRow(form, { key: "off", value: false });
    $(form, "[data-off-variant]").dataset.initial = "off";
  }

  function initFlagForm(form) {
    var input = $(form, "[data-variants-input]");
    var variants = [];
    try { variants = JSON.parse(input.value || "[]") || []; } catch (e) { variants = []; }
    if (!Array.isArray(variants)) variants = [];
    if (!variants.length && flagType(form) === "boolean") {
      booleanRows(form);
    } else if (!variants.length) {
      addVariantRow(form, { key: "control" });
      addVariantRow(form, { key: "treatment" });
    } else {
      variants.forEach(function (v) { addVariantRow(form, v); });
    }
    refreshOffVariant(form);

    var typeSelect = $(form, "select[name=flag_type]");
    if (typeSelect) {
      typeSelect.addEventListener("change", function () {
        var keys = $$(form, "[data-variant] [data-field=key]").map(function (i) { return i.value; });
        if (typeSelect.value === "boolean") {
          booleanRows(form);
        } else if (keys.join(",") === "on,off") {
          // Leaving the boolean defaults: start from the usual experiment pair instead.
          $(form, "[data-variant-rows]").textContent = "";
          addVariantRow(form, { key: "control" });
          addVariantRow(form, { key: "treatment" });
          $(form, "[data-off-variant]").dataset.initial = "control";
        } else {
          $$(form, "[data-variant] [data-field=value]").forEach(function (i) {
            if (i.value === "true" || i.value === "false") i.value = "";
          });
        }
        refreshOffVariant(form);
      });
    }

    form.addEventListener("click", function (event) {
      var button = event.target.closest("button");
      if (!button) return;
      if (button.hasAttribute("data-add-variant")) {
        $(addVariantRow(form, {}), "[data-field=key]").focus();
        refreshOffVariant(form);
      } else if (button.dataset.remove === "variant") {
        button.closest("[data-variant]").remove();
        refreshOffVariant(form);
      }
    });

    form.addEventListener("input", function (event) {
      if (event.target.dataset.field === "key") refreshOffVariant(form);
    });

    form.addEventListener("change", function (event) {
      // Pointing a string variant at a prompt/model version names it "key@version".
      if (event.target.dataset.field !== "ref" || flagType(form) !== "string") return;
      var value = $(event.target.closest("[data-variant]"), "[data-field=value]");
      var parts = event.target.value.split(":");
      if (!value.value && parts.length === 3) value.value = parts[1] + "@" + parts[2];
    });

    form.addEventListener("submit", function (event) {
      var type = flagType(form);
      var error = $(form, "[data-variant-error]");
      error.textContent = "";
      try {
        input.value = JSON.stringify($$(form, "[data-variant]").map(function (row) {
          var key = $(row, "[data-field=key]").value.trim();
          var out = {
            key: key,
            value: parseValue(type, $(row, "[data-field=value]").value),
            description: $(row, "[data-field=description]").value.trim()
          };
          var ref = $(row, "[data-field=ref]").value.split(":");
          if (ref.length === 3) out.ref = { kind: ref[0], key: ref[1], version: Number(ref[2]) };
          return out;
        }));
      } catch (e) {
        event.preventDefault();
        error.textContent = "Variants: " + e.message;
      }
    });
  }

  // ---------------------------------------------------------------- wiring

  function init(root) {
    paintStaticBars(root);
    $$(root, "[data-rules-editor]").forEach(function (editor) {
      if (editor.dataset.ready) return;
      editor.dataset.ready = "1";
      initRulesEditor(editor);
    });
    $$(root, "[data-flag-form]").forEach(function (form) {
      if (form.dataset.ready) return;
      form.dataset.ready = "1";
      initFlagForm(form);
    });
  }

  // Escape closes an open kill / restore confirm step and puts the focus back on its control.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var open = event.target.closest && event.target.closest("details.kill-confirm[open]");
    if (!open) return;
    open.open = false;
    $(open, "summary").focus();
  });

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSwap", function (event) { init(event.detail.target); });
  // htmx swaps with outerHTML replace the target: look at the whole document again.
  document.addEventListener("htmx:afterSettle", function () { init(document); });
})();
