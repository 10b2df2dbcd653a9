console.log("web app");
