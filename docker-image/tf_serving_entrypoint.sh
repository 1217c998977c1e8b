#!/bin/bash
# Same behaviour as the official tensorflow/serving entrypoint: fixed ports, model from the
# environment, every docker-run argument appended as an extra tensorflow_model_server flag.
# Like the official script it does not exec, so bash stays PID 1 (launchers must not rely on
# SIGTERM reaching the server).

tensorflow_model_server --port=8500 --rest_api_port=8501 \
    --model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} \
    "$@"
