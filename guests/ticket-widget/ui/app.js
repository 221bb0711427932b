// The ticket widget's UI: lists the tickets and adds one, through the host page's bridge
// (vendor/frame.js is @palisade/ui's iframe side, as built from sdk/ui). The document has
// no network access of its own (connect-src 'none'): every API call goes through the host.
import { connect } from "./vendor/frame.js";

const bridge = connect();
const list = document.getElementById("items");
const status = document.getElementById("status");
const title = document.getElementById("title");
const add = document.getElementById("add");

function fit() {
  bridge.resize(document.documentElement.scrollHeight);
}

async function refresh() {
  const answer = await bridge.request("GET", "/items");
  if (answer.status !== 200) {
    status.textContent = `could not list the tickets (${answer.status})`;
    return;
  }
  const { items } = JSON.parse(answer.body);
  list.replaceChildren(
    ...items.map((item) => {
      const li = document.createElement("li");
      li.textContent = item.title;
      li.dataset.id = String(item.id);
      return li;
    }),
  );
  status.textContent = items.length === 0 ? "No tickets yet." : "";
  fit();
}

add.addEventListener("click", async () => {
  const text = title.value.trim();
  if (text === "") {
    return;
  }
  add.disabled = true;
  try {
    const answer = await bridge.request(
      "POST",
      "/items",
      JSON.stringify({ title: text }),
      { "content-type": "application/json" },
    );
    if (answer.status === 201) {
      title.value = "";
      await refresh();
    } else {
      status.textContent = `could not add the ticket (${answer.status})`;
    }
  } finally {
    add.disabled = false;
  }
});

const bootstrap = await bridge.ready();
document.body.classList.toggle("dark", bootstrap.theme === "dark");
document.documentElement.lang = bootstrap.locale;
await refresh();
document.body.dataset.ready = "true";
