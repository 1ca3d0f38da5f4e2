// The create form: DPO's beta only for DPO, the LoRA settings only for a LoRA adapter.
"use strict";

(() => {
  const form = document.getElementById("ft-new-form");
  if (!form) return;
  const method = form.elements.method;
  const adapter = form.elements.adapter_type;
  const toggle = () => {
    for (const el of form.querySelectorAll(".ft-dpo-only")) el.hidden = method.value !== "dpo";
    for (const el of form.querySelectorAll(".ft-lora-only")) el.hidden = adapter.value !== "lora";
  };
  method.addEventListener("change", toggle);
  adapter.addEventListener("change", toggle);
  toggle();
})();
