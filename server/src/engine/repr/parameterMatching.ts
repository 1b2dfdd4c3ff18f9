import type { Checkpoint } from '../formats/checkpoint';
import { recogniseArchitecture } from './architecture';
import type { FeatureModel } from './featureModel';
import { kerasParameterOrder } from './kerasFeatureModel';
import { inPytorchLayout, permuteAxes, TO_INPUTS_FIRST, TO_OUTPUTS_FIRST } from './kerasLayout';
import { loadParameters } from './stateDictModel';

/**
 * A checkpoint's values for the parameters a model runs on, in the model's layout. By name
 * first; otherwise — the same architecture saved under other names (another Keras session's
 * `dense_3`, another framework) — layer by layer in the order the architecture computes them,
 * when every parameter has the same shape. Across layouts (a Keras model, PyTorch candidates,
 * or the reverse) only networks of vectors and matrices are matched: a convolutional net's
 * flatten orders its features differently in the two frameworks, so its layers would line up
 * by shape and still not compute the same function.
 */
export async function parametersFor(checkpoint: Checkpoint, model: FeatureModel, signal?: AbortSignal): Promise<Map<string, Float32Array>> {
  const modelInputsFirst = model.kernelLayout === 'inputs-first';
  try {
    return await loadParameters(modelInputsFirst ? checkpoint : inPytorchLayout(checkpoint), model, signal);
  } catch (byName) {
    const own = parameterOrder(checkpoint, modelInputsFirst);
    const wanted = [...model.parameters];
    if (!own || own.parameters.size !== wanted.length) throw byName;
    const transposed = own.inputsFirst !== modelInputsFirst;
    const ownList = [...own.parameters];
    const fits = ownList.every(([, shape], i) => {
      const wantedShape = wanted[i]![1];
      if (!transposed) return shape.join() === wantedShape.join();
      return shape.length <= 2 && [...shape].reverse().join() === wantedShape.join();
    });
    if (!fits) throw byName;
    const values = await loadParameters(own.view, { ...model, parameters: own.parameters }, signal);
    return new Map(
      wanted.map(([name], i) => {
        const [ownName, shape] = ownList[i]!;
        const value = values.get(ownName)!;
        const order = (own.inputsFirst ? TO_OUTPUTS_FIRST : TO_INPUTS_FIRST)[shape.length];
        return [name, transposed && order ? permuteAxes(value, shape, order, new Float32Array(value.length)) : value];
      }),
    );
  }
}

/** The checkpoint's own parameters in computing order, in the layout of the same kind of model as `preferInputsFirst` where it can be. */
function parameterOrder(checkpoint: Checkpoint, preferInputsFirst: boolean): { parameters: ReadonlyMap<string, readonly number[]>; view: Checkpoint; inputsFirst: boolean } | undefined {
  const fromConfig = () => {
    const parameters = kerasParameterOrder(checkpoint);
    return parameters && { parameters, view: checkpoint, inputsFirst: true };
  };
  const fromStateDict = () => {
    const view = inPytorchLayout(checkpoint);
    const recognition = recogniseArchitecture(view.tensors);
    return 'reason' in recognition ? undefined : { parameters: recognition.architecture.parameters, view, inputsFirst: false };
  };
  return preferInputsFirst ? (fromConfig() ?? fromStateDict()) : (fromStateDict() ?? fromConfig());
}

/** A parameter as an outputs-first matrix (rows are output units), whichever layout the model keeps. */
export function outputsFirstMatrix(model: FeatureModel, name: string, values: Float32Array): { values: Float32Array; rows: number; columns: number } {
  const shape = model.parameters.get(name)!;
  const order = model.kernelLayout === 'inputs-first' ? TO_OUTPUTS_FIRST[shape.length] : undefined;
  const matrix = order ? permuteAxes(values, shape, order, new Float32Array(values.length)) : values;
  const rows = order ? shape[order[0]!]! : shape[0]!;
  return { values: matrix, rows, columns: values.length / rows };
}
