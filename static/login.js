// Telegram sign-in on the login page. Both ways end in a plain form post (with its CSRF token) to
// the server, which checks Telegram's signature: nothing here is trusted.
(function () {
  "use strict";

  // The Login Widget calls this with the signed fields of the person who accepted.
  window.onTelegramAuth = function (user) {
    const form = document.getElementById("telegram-form");
    Object.keys(user).forEach(function (key) {
      const field = document.createElement("input");
      field.type = "hidden";
      field.name = key;
      field.value = user[key];
      form.append(field);
    });
    form.submit();
  };

  // A Mini App is opened with Telegram's signed initData in the URL's fragment.
  const initData = new URLSearchParams(window.location.hash.slice(1)).get("tgWebAppData");
  const miniAppForm = document.getElementById("mini-app-form");
  if (initData && miniAppForm) {
    miniAppForm.elements.initData.value = initData;
    miniAppForm.submit();
  }
})();
