/**
 * A network cut before its task head, runnable with any parameter values of its architecture:
 * what the representation methods need (features of the same probe under a candidate's weights,
 * the child's weights, and points on the line between them). Executors for ONNX graphs and for
 * state dicts of recognised architectures implement it.
 */
export interface FeatureModel {
  /** For messages, e.g. "MLP 784→256→128 (features: 128)" or "ONNX graph, features from /fc/Relu_output_0". */
  readonly description: string;
  /** Shape of one probe sample, e.g. [784] or [3, 224, 224]. */
  readonly inputShape: readonly number[];
  /** Names of the parameters the features depend on (the feature extractor g, not the head), with their shapes. */
  readonly parameters: ReadonlyMap<string, readonly number[]>;
  /**
   * How weight matrices are laid out: PyTorch's outputs-first ([out, in], OIHW), the default, or
   * Keras's inputs-first ([in, out], HWIO).
   */
  readonly kernelLayout?: 'outputs-first' | 'inputs-first';
  /**
   * Parameters training does not move by gradient (BatchNorm's moving statistics) where their
   * names do not say so: PyTorch's end in `running_mean`/`running_var`, Keras 3 numbers them.
   */
  readonly runningStatistics?: ReadonlySet<string>;
  /** Where the computation runs, e.g. "onnxruntime cpu" or "tfjs wasm". */
  readonly device: string;
  /**
   * Features of `rows` probe samples (row-major, rows × product(inputShape)) under the given
   * parameter values (every name in `parameters`, row-major float32): rows × columns, row-major.
   */
  features(probe: Float32Array, rows: number, parameters: ReadonlyMap<string, Float32Array>, signal?: AbortSignal): Promise<FeatureMatrix>;
  /** Frees native sessions and tensors. */
  dispose(): Promise<void>;
}

export interface FeatureMatrix {
  readonly values: Float32Array;
  readonly rows: number;
  readonly columns: number;
}
