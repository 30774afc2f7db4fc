"""The control plane: what changes the running models while the data path keeps flowing.

    models.RunningModels   the one owner of the running models: load and verify a bundle, install (swap) it,
                           resolve a model name, describe them for the status document
    commands.CommandHandler   `<prefix>/<device>/cmd/<name>` (info, reload)
    deploy.DeployReceiver     `<prefix>/<device>/deploy/request`: fetch a bundle in chunks, install it

Commands and the deploy receiver get the model owner, a publish function and the few other pieces they use
(topics, a stats provider, a subscriber), typed as the protocols in `seams`, never the whole daemon: each can be
tested with those seams alone, and none reaches into the daemon's objects.
"""
