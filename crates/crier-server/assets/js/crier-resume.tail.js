return crierResume;
});
