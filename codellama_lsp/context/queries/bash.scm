; Definitions for the workspace index: @name is the defined name, @definition.<kind> the whole definition.
(function_definition name: (word) @name) @definition.function
